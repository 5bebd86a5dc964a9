"""nbgrader's Execute preprocessor, hardened for hostile notebooks.

Four things nbgrader's own ``Execute`` does not do:

* a graded test cell whose ``grade_id`` has a check in :mod:`grader.checks`
  is not run in the kernel: the check's requests are (plain data, see
  :mod:`bnref.checking.driver`), the kernel answers with data, and the
  verdict is decided here, in the grading process. The cell's outputs are
  replaced by the grader's own: the seed line, and on failure an error with
  the check's message. Nothing the student's code prints or does can reach
  them. Each check names a kernel *profile* (what the kernel can reach,
  :mod:`grader.hide`, :mod:`bnref.checking.lockdown`); when the next graded
  cell needs another profile, a fresh kernel with that profile replays the
  earlier cells;

* it starts kernels through :class:`grader.sandbox.SandboxKernelManager`;
* a kernel that dies (``os._exit``, a resource limit, a signal) or a cell that
  runs past the timeout costs only that cell: the cell gets an error output
  (so its tests score 0), a fresh sandboxed kernel replays every code cell
  before it except those that killed a kernel (a cell that raised is replayed
  too: it may define names later cells need), and grading goes on with the
  next cell;
* output is capped per cell in bytes, while it arrives, so a cell printing
  a gigabyte neither fills the grader's memory nor the autograded notebook.
"""
import copy
import itertools
import json

from nbclient import NotebookClient
from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute

from grader import checks
from grader.sandbox import Sandbox, SandboxKernelManager


class CellTimedOut(DeadKernelError):
    """The cell ran past the timeout; its sandbox was torn down."""


def _error_output(ename, evalue):
    return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                        traceback=[f"{ename}: {evalue}"])


def _msg_bytes(msg):
    content = msg.get("content", {})
    if "text" in content:
        return len(content["text"])
    return len(json.dumps(content.get("data", content), default=str))


def _stream(text):
    return NotebookNode(output_type="stream", name="stdout", text=text)


def _probe_cell(source):
    return NotebookNode(cell_type="code", id=f"grader-probe-{next(_probe_ids)}", source=source,
                        metadata=NotebookNode(), outputs=[], execution_count=None)


_probe_ids = itertools.count()


class _SwitchProfile(Exception):
    """The next graded cell needs a kernel with another profile."""


def check_of(cell, assignment):
    """The registered check of a graded test cell, or None."""
    meta = cell.metadata.get("nbgrader", {}) if cell.cell_type == "code" else {}
    if not meta.get("grade") or meta.get("solution"):
        return None
    return checks.get(assignment, meta.get("grade_id"))


class SandboxedExecute(Execute):
    """Execute every code cell in a sandboxed kernel, surviving kernel deaths."""

    def __init__(self, *args, **kwargs):
        # nbgrader's Execute forces AsyncKernelManager through kwargs, which
        # beats config; set ours the same way.
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(*args, **kwargs)

    def preprocess(self, nb, resources=None, km=None):
        NotebookClient.__init__(self, nb, km)  # as nbconvert's ExecutePreprocessor does
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        self.sandbox = Sandbox(config=self.config)
        self._output_bytes = {}
        self._assignment = (resources or {}).get("nbgrader", {}).get("assignment", "")
        first = next(filter(None, (check_of(c, self._assignment) for c in nb.cells)), None)
        self._profile = first.profile if first else "plain"
        skip, next_index, deaths = set(), 0, 0
        while next_index < len(nb.cells):
            if deaths > self.sandbox.max_kernel_restarts:
                self._give_up(nb, next_index)
                break
            with self.setup_kernel():
                info_msg = self.wait_for_reply(self.kc.kernel_info())
                nb.metadata["language_info"] = info_msg["content"]["language_info"]
                try:
                    self._lockdown()
                    self._replay(nb, next_index, skip)
                except DeadKernelError as err:
                    self.log.warning("Kernel died while replaying earlier cells: %s", err)
                    skip.add(self._replaying)
                    deaths += 1
                    continue
                index = next_index
                try:
                    for index in range(next_index, len(nb.cells)):
                        self.preprocess_cell(nb.cells[index], resources, index)
                    next_index = len(nb.cells)
                except _SwitchProfile as switch:
                    self._profile = str(switch)
                    next_index = index
                except DeadKernelError as err:
                    self._record_death(nb.cells[index], err)
                    skip.add(index)
                    next_index = index + 1
                    deaths += 1
        self.set_widgets_metadata()
        return nb, self.resources

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        km.profile = self._profile
        return km

    def _lockdown(self):
        """Apply the kernel profile's in-process part before any student code runs."""
        probe = self._run_probe(f"import bnref.checking.lockdown as _grader_lockdown\n"
                                f"_grader_lockdown.apply({self._profile!r})\ndel _grader_lockdown", 0)
        errors = [o for o in probe.outputs if o.get("output_type") == "error"]
        if errors:
            raise RuntimeError(f"the kernel profile {self._profile!r} could not be applied: "
                               f"{errors[0].get('ename')}: {errors[0].get('evalue')}")

    def _run_probe(self, source, index):
        """Run grader code in the kernel as a cell that is not the notebook's (nbclient
        would put it in the notebook at ``index``; the real cell goes back there)."""
        probe, real = _probe_cell(source), self.nb.cells[index]
        try:
            self.execute_cell(probe, index, store_history=False)
        finally:
            self.nb.cells[index] = real
            self._output_bytes.pop(index, None)
        return probe

    def preprocess_cell(self, cell, resources, index):
        chk = check_of(cell, self._assignment)
        if chk is None:
            return super().preprocess_cell(cell, resources, index)
        if chk.profile != self._profile:
            raise _SwitchProfile(chk.profile)
        self._grade_with_check(cell, index, chk)
        return cell, resources

    def _grade_with_check(self, cell, index, chk):
        """Ask the kernel for the part's answers; write the verdict decided here into the cell."""
        text, verifies, nonce = checks.prepare(chk.assignment, chk.part)
        probe = self._run_probe(f"import bnref.checking.driver as _grader_driver\n"
                                f"_grader_driver.answer({text!r})\ndel _grader_driver", index)
        results, message = checks.read_answer(probe.outputs, nonce, self.sandbox.max_output_bytes)
        if message is None:
            message = checks.judge(verifies, results)
        from grader import hidden

        cell.outputs = [_stream(checks.banner(chk.part, hidden.grading_seed()) + "\n")]
        if message is None:
            cell.outputs.append(_stream("passed\n"))
        else:
            cell.outputs.append(_error_output("AssertionError", message))
        cell.execution_count = probe.get("execution_count")

    def _replay(self, nb, stop, skip):
        """Rebuild the state of cells [0, stop) in a fresh kernel, outputs untouched."""
        for index in range(stop):
            cell = nb.cells[index]
            if index in skip or cell.cell_type != "code" or check_of(cell, self._assignment):
                continue
            self._replaying = index
            self.execute_cell(copy.deepcopy(cell), index, store_history=False)
        self._output_bytes = {k: v for k, v in self._output_bytes.items() if k >= stop}

    def _record_death(self, cell, err):
        if isinstance(err, CellTimedOut):
            ename, evalue = "CellTimeoutError", f"No reply from kernel within {self.timeout} s"
        else:
            ename, evalue = "KernelDied", "The kernel died while running this cell"
        self.log.warning("Cell %s: %s; restarting the sandboxed kernel", ename, evalue)
        cell.outputs.append(_error_output(ename, evalue + "; the rest was graded in a fresh kernel."))

    def _give_up(self, nb, start):
        for cell in nb.cells[start:]:
            if cell.cell_type == "code":
                cell.outputs = [_error_output(
                    "KernelDied", "Not run: the kernel died too many times in this notebook.")]

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count,
                                                    store_history)
        except CellTimeoutError as err:
            # The reply came but a flood of output did not drain within
            # iopub_timeout; nbclient would abort the whole notebook here.
            self.log.error("%s: killing the sandboxed kernel", err)
            await self.km.shutdown_kernel(now=True)
            raise CellTimedOut(str(err)) from None

    execute_cell = run_sync(async_execute_cell)

    async def _async_handle_timeout(self, timeout, cell=None):
        # An interrupt can be caught by student code (`except BaseException`);
        # tearing the sandbox down cannot.
        self.log.error("Timeout after %s s: killing the sandboxed kernel", timeout)
        await self.km.shutdown_kernel(now=True)
        raise CellTimedOut(f"Cell timed out after {timeout} s")

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] == "error":
            cap = self.sandbox.max_output_bytes
            content = msg["content"]
            content["evalue"] = str(content.get("evalue", ""))[:cap]
            content["traceback"] = [line[:cap] for line in content.get("traceback", [])[:200]]
            return super().output(outs, msg, display_id, cell_index)
        cap = self.sandbox.max_output_bytes
        used = self._output_bytes.get(cell_index, 0)
        size = _msg_bytes(msg)
        self._output_bytes[cell_index] = used + size
        if used + size <= cap:
            return super().output(outs, msg, display_id, cell_index)
        if used > cap:
            return None  # already truncated
        if msg["msg_type"] == "stream":
            msg["content"]["text"] = msg["content"]["text"][:cap - used]
            super().output(outs, msg, display_id, cell_index)
        outs.append(NotebookNode(output_type="stream", name="stderr", text=(
            f"\n... output truncated by the grading sandbox after {cap} bytes ...\n")))
        self._output_bytes[cell_index] = cap + 1
        return None
