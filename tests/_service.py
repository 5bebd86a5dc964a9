"""Helpers for the check service's tests: an app on a temporary database, a
notebook's functions in a namespace, and the service run as a real process."""
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from _nbgrader import REPO, completed, mutate

import nbformat


def app_client(tmp_path, **settings):
    from fastapi.testclient import TestClient

    from service.app import create_app

    settings.setdefault("database_url", f"sqlite:///{tmp_path / 'checks.db'}")
    return TestClient(create_app(**settings))


def notebook_namespace(assignment, changes=()):
    """Run the non-test code cells of the release notebook completed from solutions/
    (and changed by ``changes``, as the pipeline tests do; ``None``: the release as it
    is) in a fresh namespace."""
    name = f"{assignment}.ipynb"
    release = nbformat.read(REPO / "assignments" / assignment / name, as_version=4)
    solution = nbformat.read(REPO / "solutions" / assignment / name, as_version=4)
    nb = release if changes is None else mutate(completed(release, solution), list(changes))
    namespace = {"__name__": "__main__"}
    first_answer = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution"))
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        # The setup cells, then the answer cells: all that the checks call.
        wanted = meta.get("solution") or (index < first_answer and not meta.get("grade"))
        if cell.cell_type != "code" or not wanted or "importlib.util.find_spec" in cell.source:
            continue
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            try:
                exec(compile(cell.source, f"<{assignment} cell {index}>", "exec"), namespace)
            except Exception:
                pass  # as in a notebook: a cell that raises leaves the rest to run
    return namespace


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """``python -m service`` on 127.0.0.1, as ``make serve`` starts it."""

    def __init__(self, database_url, port=None, workers=1, env=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url, self.workers = database_url, workers
        self.env = dict(os.environ, CHECK_SERVICE_DATABASE_URL=database_url, **(env or {}))
        self.process = None

    def start(self, timeout=90):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(self.port), "--workers", str(self.workers)],
            cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if json.loads(response.read()).get("ok"):
                        return self
            except OSError:
                time.sleep(0.3)
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited: {self.process.stdout.read().decode()[-2000:]}")
        raise RuntimeError("the service did not answer /healthz in time")

    def kill(self):
        """SIGKILL the whole process group: no graceful shutdown, as in a crash."""
        import signal

        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()
