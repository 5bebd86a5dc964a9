"""Start and stop the course's local JupyterHub (``make hub``, ``make hub-stop``).

``start`` prepares, once, everything the hub serves, under ``BN_HUB_ROOT``
(default ``/srv/bn-course-hub``):

* ``course/``: the course directory, a ``git clone`` of this repository owned
  by the instructor account and closed to everyone else (mode 0700); an
  existing one is kept as it is, with its gradebook;
* ``exchange/``: nbgrader's exchange, writable by every account (mode 1777,
  nbgrader sets the modes of the folders inside);
* ``runtime/``: the course's virtual environment (and its interpreter when
  that lives in a private folder), copied as hard links where possible so
  that every account can run it without reading the checkout; rebuilt on
  every start;
* ``state/``: the hub's database, cookie secret, log, and ``accounts.txt``
  with the generated passwords (root only).

As root it creates real Unix accounts (``<prefix>-instructor`` and
``<prefix>-student1..N``) and serves each with ``LocalProcessSpawner``; as
anyone else it serves one demo account, the instructor, as the current user
with ``SimpleLocalProcessSpawner`` and says so. Each account gets its
nbgrader configuration in ``~/.jupyter``: the course's ``nbgrader_config.py``
and the exchange for the instructor, the course id and the exchange for the
students. Passwords are generated on the first start and printed with the URL.

Environment: BN_HUB_ROOT, BN_HUB_PORT (8000), BN_HUB_PREFIX (bn),
BN_HUB_STUDENTS (2).
"""

import argparse
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
PROXY = VENV / "hub-npm" / "node_modules" / ".bin" / "configurable-http-proxy"
CONFIG = Path(__file__).resolve().parent / "jupyterhub_config.py"
COURSE_ID = "batchnorm-course"  # grader.course.COURSE_ID, read without importing the course
START_TIMEOUT_S = 110

# JupyterLab settings for every account: cells stay in the page (a long
# notebook is not windowed away), and no news pop-up asks to fetch anything.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
}


def _settings():
    root = Path(os.environ.get("BN_HUB_ROOT", "/srv/bn-course-hub")).resolve()
    prefix = os.environ.get("BN_HUB_PREFIX", "bn")
    students = int(os.environ.get("BN_HUB_STUDENTS", "2"))
    port = int(os.environ.get("BN_HUB_PORT", "8000"))
    if students < 1:
        raise SystemExit(f"BN_HUB_STUDENTS must be at least 1, got {students}")
    return root, prefix, students, port


def _run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _ensure_account(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        _run("useradd", "--create-home", "--shell", "/bin/bash", name)
        user = pwd.getpwnam(name)
        # Whatever the system's default, no account reads another's home
        # (fetched assignments, feedback).
        os.chmod(user.pw_dir, 0o700)
        return user


def _configure_account(home, nbgrader_config, user=None):
    """nbgrader and JupyterLab settings in ``home/.jupyter``, owned by ``user``."""
    jupyter = Path(home) / ".jupyter"
    files = {"nbgrader_config.py": nbgrader_config}
    files.update({f"lab/user-settings/{rel}": json.dumps(v) for rel, v in LAB_SETTINGS.items()})
    for rel, text in files.items():
        (jupyter / rel).parent.mkdir(parents=True, exist_ok=True)
        (jupyter / rel).write_text(text)
    if user is not None:
        _run("chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(jupyter))


def _course_copy(course, owner):
    if not course.exists():
        _run("git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(course))
    if owner is not None:
        _run("chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(course))
        course.chmod(0o700)


def _runs_for_others(python):
    """Whether an account without privileges can start this interpreter."""
    try:
        return subprocess.run([python, "-c", "pass"], user=65534, group=65534, extra_groups=[],
                              capture_output=True).returncode == 0
    except OSError:
        return False


def _shared_python(runtime):
    """The venv's interpreter, or a copy of it that every account can run.

    The course's venv may stand on an interpreter in a private folder (pyenv
    under /root, a home directory). Then its installation is copied next to
    the runtime, and a run path into the old folder (where the interpreter
    finds libpython) is rewritten to ``$ORIGIN/../lib``. Another Python of
    the same minor version is no substitute: patch releases differ enough
    to break packages of the lock file (soupsieve 4.1 fails on 3.11.2).
    """
    python = os.path.realpath(sys.executable)
    if _runs_for_others(python):
        return python
    base = Path(sys.base_prefix)
    copy = runtime / "python"
    _copy_tree(base, copy)
    python = copy / Path(python).relative_to(base)
    old = bytes(base / "lib") + b"\0"
    binary = python.read_bytes()
    if old in binary:
        new = b"$ORIGIN/../lib\0"
        binary = binary.replace(old, new + b"\0" * (len(old) - len(new)))
        python.unlink()  # a hard link: never write through it
        python.write_bytes(binary)
        python.chmod(0o755)
    if not _runs_for_others(str(python)):
        raise SystemExit(f"the copy {python} of the course's interpreter does not run for other "
                         "accounts; build .venv from an interpreter outside private folders")
    return str(python)


def _copy_tree(src, dst):
    """Copy a folder as hard links where the file system allows, else in full."""
    if subprocess.run(["cp", "-al", str(src), str(dst)], capture_output=True).returncode:
        shutil.rmtree(dst, ignore_errors=True)
        _run("cp", "-a", str(src), str(dst))


def build_runtime(runtime):
    """The course's environment, copied where every account can run it.

    ``runtime/venv`` shares the files of .venv (hard links, a few seconds),
    with its interpreter, scripts and ``bnref`` made independent of the
    repository checkout, which other accounts may not be able to read (and
    students must not: it holds solutions/).
    """
    if runtime.exists():
        shutil.rmtree(runtime)
    runtime.mkdir(parents=True)
    venv = runtime / "venv"
    _copy_tree(VENV, venv)
    python = _shared_python(runtime)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for name in os.listdir(venv / "bin"):
        path = venv / "bin" / name
        if path.is_symlink() and os.path.realpath(path).startswith(sys.base_prefix):
            path.unlink()
            path.symlink_to(python)
        elif path.is_file() and path.read_bytes()[:128].startswith(b"#!" + bytes(VENV)):
            text = path.read_bytes().replace(bytes(VENV), bytes(venv), 1)
            path.unlink()  # a hard link: never write through it
            path.write_bytes(text)
            path.chmod(0o755)
    cfg = venv / "pyvenv.cfg"
    cfg.unlink()
    cfg.write_text(f"home = {os.path.dirname(python)}\ninclude-system-site-packages = false\n"
                   f"version = {'.'.join(map(str, sys.version_info[:3]))}\n")
    # An editable install points into the checkout; the runtime gets a copy.
    for editable in site.glob("__editable__*bnref*"):
        editable.unlink()
    shutil.copytree(REPO / "bnref", site / "bnref", ignore=shutil.ignore_patterns("__pycache__"))
    return venv


def _password(passwords, name):
    if name not in passwords:
        passwords[name] = secrets.token_urlsafe(12)
    return passwords[name]


def prepare():
    """Folders, accounts, configuration and the state file; returns the state."""
    root, prefix, students, port = _settings()
    as_root = os.geteuid() == 0
    state_dir = root / "state"
    exchange = root / "exchange"
    course = root / "course"
    state_dir.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    state_dir.chmod(0o700)
    exchange.mkdir(exist_ok=True)
    exchange.chmod(0o1777)

    instructor = f"{prefix}-instructor"
    names = [instructor] + ([f"{prefix}-student{i}" for i in range(1, students + 1)] if as_root else [])
    secrets_file = state_dir / "passwords.json"
    passwords = json.loads(secrets_file.read_text()) if secrets_file.exists() else {}
    accounts = {}
    for name in names:
        salt = secrets.token_bytes(16)
        digest = hashlib.scrypt(_password(passwords, name).encode(), salt=salt, n=2**14, r=8, p=1)
        accounts[name] = {"salt": salt.hex(), "scrypt": digest.hex()}
    secrets_file.write_text(json.dumps(passwords))
    secrets_file.chmod(0o600)

    venv = build_runtime(root / "runtime") if as_root else VENV
    owner = _ensure_account(instructor) if as_root else None
    _course_copy(course, owner)
    instructor_config = (
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(course / 'nbgrader_config.py')!r})  # noqa: F821\n"
        f"c.Exchange.root = {str(exchange)!r}\n")
    student_config = (
        "c = get_config()  # noqa: F821\n"
        f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
        f"c.Exchange.root = {str(exchange)!r}\n")
    demo_home = state_dir / "demo-home"
    if as_root:
        for name in names:
            user = _ensure_account(name)
            _configure_account(user.pw_dir, instructor_config if name == instructor else student_config,
                               user)
    else:
        demo_home.mkdir(exist_ok=True)
        _configure_account(demo_home, instructor_config)

    state = {
        "port": port, "state_dir": str(state_dir), "course_dir": str(course),
        "exchange": str(exchange), "repo": str(REPO), "venv": str(venv),
        "proxy": str(PROXY), "bwrap": shutil.which("bwrap") or "bwrap",
        "spawner": "local" if as_root else "simple", "demo_home": str(demo_home),
        "instructor": instructor, "students": names[1:], "accounts": accounts,
    }
    state_file = state_dir / "hub.json"
    state_file.write_text(json.dumps(state, indent=1))
    state_file.chmod(0o600)
    return state, passwords


def _healthy(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hub/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start():
    if not PROXY.exists():
        raise SystemExit(f"configurable-http-proxy not found at {PROXY}; run `make hub-install`")
    if shutil.which("jupyterhub", path=str(VENV / "bin")) is None:
        raise SystemExit(f"jupyterhub not found in {VENV / 'bin'}; run `make hub-install`")
    t0 = time.monotonic()
    pid_file = _settings()[0] / "state" / "jupyterhub.pid"
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        raise SystemExit(f"a hub from {pid_file.parent} is already running "
                         f"(pid {pid_file.read_text()}); "
                         "`make hub-stop` ends it")
    state, passwords = prepare()
    state_dir = Path(state["state_dir"])
    env = dict(os.environ, BN_HUB_STATE=str(state_dir / "hub.json"),
               PATH=os.pathsep.join([str(VENV / "bin"), os.environ.get("PATH", "/usr/bin:/bin")]))
    log = open(state_dir / "jupyterhub.log", "ab")
    proc = subprocess.Popen([str(VENV / "bin" / "jupyterhub"), "-f", str(CONFIG)], cwd=state_dir,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    while not _healthy(state["port"]):
        if proc.poll() is not None:
            raise SystemExit(f"the hub exited with status {proc.returncode}; "
                             f"see {state_dir / 'jupyterhub.log'}")
        if time.monotonic() - t0 > START_TIMEOUT_S:
            stop()
            raise SystemExit(f"the hub did not answer within {START_TIMEOUT_S} s; "
                             f"see {state_dir / 'jupyterhub.log'}")
        time.sleep(0.5)
    spawner = ("LocalProcessSpawner: one Unix account per person" if state["spawner"] == "local"
               else "SimpleLocalProcessSpawner: DEMO, one account served as the current user")
    lines = [f"Course hub at http://127.0.0.1:{state['port']}/  ({spawner})",
             f"started in {time.monotonic() - t0:.0f} s; course directory {state['course_dir']}",
             f"exchange {state['exchange']}; log {state_dir / 'jupyterhub.log'}", "accounts:"]
    for name in [state["instructor"]] + state["students"]:
        role = "instructor" if name == state["instructor"] else "student"
        lines.append(f"  {name:24s} {passwords[name]}   ({role})")
    lines.append("`make hub-stop` stops the hub and keeps the course directory.")
    text = "\n".join(lines)
    accounts_txt = state_dir / "accounts.txt"
    accounts_txt.write_text(text + "\n")
    accounts_txt.chmod(0o600)
    print(text)


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop():
    """End the hub (it stops the servers and the proxy it started); keep every folder."""
    root, *_ = _settings()
    pid_file = root / "state" / "jupyterhub.pid"
    if not pid_file.exists():
        print(f"no hub running from {root}")
        return
    pid = int(pid_file.read_text())
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.3)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    proxy_pid = root / "state" / "proxy.pid"
    if proxy_pid.exists():
        try:
            os.kill(int(proxy_pid.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
    pid_file.unlink()
    print(f"hub stopped; the course directory {root / 'course'} is kept")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop"])
    args = parser.parse_args()
    start() if args.command == "start" else stop()
