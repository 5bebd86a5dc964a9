"""The grading sandbox, end to end through nbgrader's own commands.

A small assignment goes through generate_assignment, release, fetch, submit
(one OS user playing two students), collect and autograde, with
``grader.sandbox.configure(c)`` in the course config. It has an honest part
first and last and, between them, one graded part per attack. The honest
student answers every part. The attacker answers the first and last parts
honestly and opens every other part with an attack followed by the honest
answer, so a part only scores if its attack went through unhindered. Each
attack must fail inside the sandbox with the expected error and cost exactly
its part. The honest parts, the honest student's grades and every submitted
file (byte for byte) must be as if nothing had happened.
"""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from _nbgrader import nbgrader as run_nbgrader  # noqa: E402
from grader.sandbox import Sandbox, bwrap_command, kernel_uid  # noqa: E402

BIN = Path(sys.executable).parent
COURSE_ID = "bnsandbox"
MEMORY_CAP = 2 << 30


def attacks(course, port):
    """part -> (attack source, the exception(s) the sandbox must end it with).

    The kernel killers come first so that the replays after them stay short.
    """
    victim = f"{course}/submitted/honest/ps1/ps1.ipynb"
    return {
        "exit": ("import os\nos._exit(1)", "KernelDied"),
        # flush=True makes each line reach the grader (unflushed, ipykernel's
        # buffer can hit the memory cap before anything is sent).
        "print": ("while True:\n    print('x' * 10_000, flush=True)", "CellTimeoutError"),
        "read_solutions": (f"print(open('{course}/solutions/ps1/ps1.ipynb').read())",
                           "FileNotFoundError"),
        # The course folder is absent, or an empty root-owned skeleton when
        # the submission's own folder lies beneath it (as here).
        "gradebook": ("import os\n"
                      f"open('{course}/gradebook.db', 'ab').write(b'corrupt')\n"
                      f"os.remove('{course}/gradebook.db')", ("FileNotFoundError", "PermissionError")),
        "other_submission": (f"open('{victim}', 'w').write('{{}}')\nimport os\nos.remove('{victim}')",
                             "FileNotFoundError"),
        "network": ("import socket\n"
                    f"socket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'leak')",
                    "ConnectionRefusedError"),
        # 6 GiB fits on this 24 GB machine, so only the cap can stop it.
        "memory": ("blob = bytearray(6 * 2**30)", "MemoryError"),
        "fork": ("import os, time\nwhile True:\n    if os.fork() == 0:\n"
                 "        time.sleep(600)\n        os._exit(0)", "BlockingIOError"),
    }


PARTS = ["first", *attacks("", 0), "last"]
HONEST = {part: f"answer_{part} = 42" for part in PARTS}
HONEST["first"] = "def double(x):\n    return 2 * x"
HONEST["last"] = "def triple(x):\n    return 3 * x"


def _test(part):
    return {"first": "assert double(21) == 42", "last": "assert triple(14) == 42"}.get(
        part, f"assert answer_{part} == 42")


def _cell(source, **nbgrader):
    cell = new_code_cell(source)
    cell.metadata.nbgrader = {"schema_version": 3, "locked": False, "solution": False,
                              "grade": False, "task": False, **nbgrader}
    return cell


def source_notebook():
    """One point per part, hidden tests only."""
    cells = [new_markdown_cell("# Sandbox check: one point per part")]
    for part in PARTS:
        cells.append(_cell(f"### BEGIN SOLUTION\n{HONEST[part]}\n### END SOLUTION",
                           solution=True, grade_id=part))
        cells.append(_cell(f"### BEGIN HIDDEN TESTS\n{_test(part)}\n### END HIDDEN TESTS",
                           grade=True, locked=True, points=1, grade_id=f"test_{part}"))
    nb = new_notebook(cells=cells)
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def nbgrader(*args, cwd, check=True, env=None):
    return run_nbgrader(*args, cwd=cwd, env=env, check=check, timeout=150)


def tree_hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


class Listener:
    """A TCP server on the host's loopback that records who reached it."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections, self._stop = [], threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except socket.timeout:
                continue
            self.connections.append(addr)
            conn.close()

    def close(self):
        self._stop.set()
        self.thread.join()
        self.sock.close()


def write_config(course, exchange, students):
    (course / "nbgrader_config.py").write_text(f"""
import sys
sys.path.insert(0, {str(REPO)!r})
c = get_config()
c.CourseDirectory.root = {str(course)!r}
c.CourseDirectory.course_id = {COURSE_ID!r}
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"
c.CourseDirectory.db_assignments = [{{"name": "ps1"}}]
c.CourseDirectory.db_students = {[{"id": s} for s in students]!r}
c.Exchange.root = {str(exchange)!r}
c.Execute.timeout = 5
c.Sandbox.memory_bytes = {MEMORY_CAP}
import grader.sandbox
grader.sandbox.configure(c)
""")


STUDENT_FLAGS = ["--CourseDirectory.course_id=" + COURSE_ID]


def submit(student, code, tmp, exchange):
    """Fill in a copy of the fetched release and submit it as ``student``."""
    home = tmp / "students" / student
    shutil.copytree(tmp / "fetched", home)
    path = home / "ps1" / "ps1.ipynb"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        part = cell.metadata.get("nbgrader", {}).get("grade_id")
        if part in code:
            cell.source = code[part]
    nbformat.write(nb, path)
    nbgrader("submit", "ps1", f"--student={student}", f"--Exchange.root={exchange}",
             *STUDENT_FLAGS, cwd=home)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    assert shutil.which("bwrap"), "bubblewrap missing: `apt-get install -y bubblewrap` (make test does)"
    tmp = tmp_path_factory.mktemp("sandbox")
    course, exchange = tmp / "course", tmp / "exchange"
    (course / "solutions" / "ps1").mkdir(parents=True)
    exchange.mkdir()
    listener = Listener()
    plan = attacks(course, listener.port)
    write_config(course, exchange, ["honest", "attacker"])
    nbformat.write(source_notebook(), course / "solutions" / "ps1" / "ps1.ipynb")
    nbgrader("generate_assignment", "ps1", "--force", cwd=course)
    nbgrader("release_assignment", "ps1", cwd=course)
    (tmp / "fetched").mkdir()  # fetched once: each student submits a filled-in copy
    nbgrader("fetch_assignment", "ps1", f"--Exchange.root={exchange}", *STUDENT_FLAGS,
             cwd=tmp / "fetched")
    submit("honest", HONEST, tmp, exchange)
    submit("attacker", {**HONEST, **{part: f"{attack}\nanswer_{part} = 42"
                                     for part, (attack, _) in plan.items()}}, tmp, exchange)
    nbgrader("collect", "ps1", cwd=course)
    before = tree_hashes(course / "submitted")
    start = time.monotonic()
    result = nbgrader("autograde", "ps1", cwd=course)
    print(f"autograde of 2 submissions: {time.monotonic() - start:.1f} s")
    listener.close()
    yield {"course": course, "plan": plan, "before": before, "listener": listener,
           "log": result.stderr}


def scores(course):
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
        return {s.id: {g.name: g.score for g in gb.find_submission_notebook(
                    "ps1", "ps1", s.id).grades}
                for s in gb.students}


def errors_by_part(course, student):
    nb = nbformat.read(course / "autograded" / student / "ps1" / "ps1.ipynb", as_version=4)
    return {c.metadata.nbgrader["grade_id"]: [o.ename for o in c.outputs if o.output_type == "error"]
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def test_each_attack_costs_its_part_and_nothing_else(graded):
    got = scores(graded["course"])
    assert got["honest"] == {f"test_{part}": 1 for part in PARTS}
    assert got["attacker"] == {f"test_{part}": int(part in ("first", "last")) for part in PARTS}


def test_each_attack_fails_inside_the_sandbox(graded):
    errors = errors_by_part(graded["course"], "attacker")
    for part, (_, expected) in graded["plan"].items():
        allowed = expected if isinstance(expected, tuple) else (expected,)
        assert len(errors[part]) == 1 and errors[part][0] in allowed, (part, errors[part])
    assert graded["listener"].connections == []
    assert errors_by_part(graded["course"], "honest") == {part: [] for part in PARTS}


def test_submissions_untouched_byte_for_byte(graded):
    assert tree_hashes(graded["course"] / "submitted") == graded["before"]
    assert (graded["course"] / "solutions" / "ps1" / "ps1.ipynb").exists()


def test_unbounded_print_is_truncated(graded):
    printed = graded["course"] / "autograded" / "attacker" / "ps1" / "ps1.ipynb"
    limit = Sandbox().max_output_bytes
    assert printed.stat().st_size < 2 * limit
    assert "output truncated by the grading sandbox" in printed.read_text()


def test_autograde_refuses_to_start_without_bwrap(graded, tmp_path):
    # A PATH without /usr/bin hides bwrap; nbgrader needs only the venv.
    env = dict(os.environ, PATH=str(BIN))
    result = nbgrader("autograde", "ps1", "--force", cwd=graded["course"], check=False, env=env)
    assert result.returncode != 0
    assert "apt-get install -y bubblewrap" in result.stdout + result.stderr
    assert "c.Sandbox.enabled = False" in result.stdout + result.stderr


def run_in_sandbox(code, tmp_path, **limits):
    """Run ``python -c code`` with the same bwrap command the kernels get."""
    ipc = tmp_path / "ipc"
    ipc.mkdir()
    settings = Sandbox(**limits)
    uid = kernel_uid(settings)
    if os.geteuid() == 0:
        os.chown(ipc, uid, uid)
    cmd = bwrap_command(settings, [sys.executable, "-c", code], cwd=str(tmp_path),
                        ipc_dir=str(ipc), uid=uid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


FORK_BOMB = """
import json, os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError as err:
    print(json.dumps({"forked": n, "error": type(err).__name__}))
"""


def test_fork_bomb_stops_at_the_process_cap(tmp_path):
    got = run_in_sandbox(FORK_BOMB, tmp_path, max_processes=40)
    assert got["error"] == "BlockingIOError"
    assert 0 < got["forked"] < 40


VIEW = """
import json, os
def tries(path, mode):
    try:
        open(path, mode).close()
        return "ok"
    except OSError as err:
        return type(err).__name__
print(json.dumps({"repo": sorted(os.listdir(%r)), "uid": os.getuid(),
                  "write_usr": tries("/usr/pwned", "w"), "write_tmp": tries("/tmp/scratch", "w"),
                  "shadow": tries("/etc/shadow", "r")}))
"""


def test_file_system_view(tmp_path):
    got = run_in_sandbox(VIEW % str(REPO), tmp_path)
    assert "solutions" not in got["repo"] and "nbgrader_config.py" not in got["repo"]
    assert got["uid"] != 0
    assert got["write_usr"] in ("OSError", "PermissionError")
    assert got["write_tmp"] == "ok"
    assert got["shadow"] == "FileNotFoundError"


def fake_driver(root, minors, nodes):
    """A /proc/driver/nvidia/gpus and a /dev as the NVIDIA driver lays them out."""
    driver, dev = root / "gpus", root / "dev"
    dev.mkdir(parents=True)
    for i, minor in enumerate(minors):
        (driver / f"0000:0{i}:00.0").mkdir(parents=True)
        (driver / f"0000:0{i}:00.0" / "information").write_text(
            f"Model: \t\t NVIDIA H200\nIRQ:   \t\t 42\nDevice Minor: \t {minor}\nBus Type: \t PCIe\n")
    for name in nodes:
        (dev / name).touch()
    return str(dev), str(driver)


def test_gpu_nodes_are_those_the_driver_lists_and_nothing_else(tmp_path):
    from grader.sandbox import cuda_device_nodes

    dev, driver = fake_driver(tmp_path, [0, 2], ["nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm",
                                                 "nvidia-modeset", "null", "sda", "kvm"])
    assert cuda_device_nodes(dev, driver) == [f"{dev}/{n}" for n in ("nvidiactl", "nvidia-uvm", "nvidia0", "nvidia2")]
    # No driver (or a driver listing no GPU): nothing is bound, whatever /dev holds.
    assert cuda_device_nodes(dev, str(tmp_path / "absent")) == []
    dev2, driver2 = fake_driver(tmp_path / "none", [], ["nvidia0", "nvidiactl"])
    assert cuda_device_nodes(dev2, driver2) == []


def test_bwrap_binds_gpu_nodes_and_lifts_the_address_space_limit_only_with_a_gpu(monkeypatch, tmp_path):
    import grader.sandbox as sandbox

    def command(nodes, **settings):
        monkeypatch.setattr(sandbox, "cuda_device_nodes", lambda: nodes)
        return bwrap_command(Sandbox(**settings), ["python3"], cwd=None, ipc_dir=str(tmp_path), uid=12345)

    plain = command([])
    assert "--dev-bind" not in plain and f"--as={4 << 30}" in plain
    nodes = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"]
    with_gpu = command(nodes)
    binds = [with_gpu[i + 1] for i, a in enumerate(with_gpu) if a == "--dev-bind"]
    assert binds == nodes and "--as=unlimited" in with_gpu
    assert f"--as={64 << 30}" in command(nodes, gpu_memory_bytes=64 << 30)
    assert "--dev-bind" not in command(nodes, gpu=False)


def test_grader_modules_import_without_cycles():
    """Each grader module imports on its own; grader.sandbox imports no other grader module
    but grader.hide, which imports none."""
    import ast

    for path in sorted((REPO / "grader").glob("*.py")):
        done = subprocess.run([sys.executable, "-c", f"import grader.{path.stem}"], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"grader.{path.stem}: {done.stderr[-2000:]}"
    def grader_imports(name):
        tree = ast.parse((REPO / "grader" / f"{name}.py").read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names = {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                 and n.module == "grader" for a in n.names}
        return {m for m in modules | names if m.startswith("grader") and m != "grader"}

    assert grader_imports("sandbox") <= {"grader.hide"}, grader_imports("sandbox")
    assert not grader_imports("hide")
