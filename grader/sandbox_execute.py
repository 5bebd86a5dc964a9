"""nbgrader's Execute preprocessor, hardened for hostile notebooks.

Three things nbgrader's own ``Execute`` does not do:

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
import json

from nbclient import NotebookClient
from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute

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
        skip, next_index, deaths = set(), 0, 0
        while next_index < len(nb.cells):
            if deaths > self.sandbox.max_kernel_restarts:
                self._give_up(nb, next_index)
                break
            with self.setup_kernel():
                info_msg = self.wait_for_reply(self.kc.kernel_info())
                nb.metadata["language_info"] = info_msg["content"]["language_info"]
                try:
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
                except DeadKernelError as err:
                    self._record_death(nb.cells[index], err)
                    skip.add(index)
                    next_index = index + 1
                    deaths += 1
        self.set_widgets_metadata()
        return nb, self.resources

    def _replay(self, nb, stop, skip):
        """Rebuild the state of cells [0, stop) in a fresh kernel, outputs untouched."""
        for index in range(stop):
            cell = nb.cells[index]
            if index in skip or cell.cell_type != "code":
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
