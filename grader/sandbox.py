"""Run student code under bubblewrap while nbgrader autogrades it.

nbgrader executes every submission with the instructor's own rights, and its
FAQ says plainly that it does not protect against malicious code. This module
closes that gap without home-made isolation: each grading kernel is started
inside ``bwrap`` (Debian's ``bubblewrap``), which gives it

* a file system built from read-only binds of what Python needs (the system
  libraries, the interpreter, the virtual environment, the reference package)
  and small private tmpfs scratch folders; ``solutions/``, the gradebook, the
  exchange, other submissions and the instructor's home are simply absent;
* its own network namespace (no route out, and the host's loopback is another
  interface), its own PID namespace and an unprivileged uid in a user namespace;
* ``prlimit`` caps on address space, CPU seconds, processes and file size.

Because the kernel cannot reach the client over TCP any more, the client and
kernel talk over ZeroMQ's IPC transport through socket files in a private
directory that is the only host folder bound writable into the sandbox.

Use it from ``nbgrader_config.py``::

    import grader.sandbox
    grader.sandbox.configure(c)

and switch it off knowingly with ``c.Sandbox.enabled = False`` *before* that
call (or ``NBGRADER_SANDBOX=off`` in the environment).
"""
import functools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Integer, List, Unicode
from traitlets.config import Configurable

INSTALL_HINT = (
    "The grading sandbox needs bubblewrap (the `bwrap` command). Install it with\n"
    "    sudo apt-get install -y bubblewrap      (Debian/Ubuntu)\n"
    "    sudo dnf install -y bubblewrap          (Fedora/RHEL)\n"
    "or, if you accept that student code runs with your own rights and can read\n"
    "solutions/, rewrite gradebook.db and touch other submissions, switch the\n"
    "sandbox off knowingly: set `c.Sandbox.enabled = False` before\n"
    "`grader.sandbox.configure(c)` in nbgrader_config.py, or run with\n"
    "NBGRADER_SANDBOX=off."
)

# Environment variables the kernel may inherit; everything else (tokens,
# credentials, the instructor's paths) stays outside.
ENV_KEEP = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM", "MPLBACKEND", "TRITON_INTERPRET",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED",
            "PYTHONPATH")  # not GRADER_SEED: the kernel has no use for the grading seed


class SandboxUnavailable(RuntimeError):
    """bwrap is missing or cannot create namespaces on this machine."""


class Sandbox(Configurable):
    """Settings of the grading sandbox (``c.Sandbox.*`` in nbgrader_config.py)."""

    enabled = Bool(True, help="Run autograding kernels inside bubblewrap.").tag(config=True)
    bwrap = Unicode("bwrap", help="The bubblewrap executable.").tag(config=True)
    memory_bytes = Integer(4 << 30, help="RLIMIT_AS of the kernel (address space).").tag(config=True)
    cpu_seconds = Integer(600, help="RLIMIT_CPU of the kernel over its whole life.").tag(config=True)
    max_processes = Integer(128, help="RLIMIT_NPROC inside the sandbox (threads count too).").tag(config=True)
    file_bytes = Integer(64 << 20, help="RLIMIT_FSIZE: largest file the kernel may write.").tag(config=True)
    scratch_bytes = Integer(256 << 20, help="Size of each private tmpfs "
                            "(/tmp, /dev/shm, the working dir).").tag(config=True)
    max_output_bytes = Integer(1 << 20, help="Output kept per cell; the rest is dropped.").tag(config=True)
    max_kernel_restarts = Integer(10, help="Kernel deaths tolerated per notebook.").tag(config=True)
    uid = Integer(-1, help="Host uid the kernel runs as when grading as root; -1 draws a "
                  "fresh uid per kernel from [10**9, 10**9 + 2**24), a uid that owns no files "
                  "and whose process count (RLIMIT_NPROC) no other kernel shares.").tag(config=True)
    extra_ro_paths = List(Unicode(), help="More host paths to bind read-only at the same place.").tag(config=True)
    gpu = Bool(True, help="Bind the device nodes of the NVIDIA GPUs the driver lists, and no "
               "other node of /dev (see cuda_device_nodes).").tag(config=True)
    gpu_memory_bytes = Integer(0, help="RLIMIT_AS of the kernel when a GPU is bound; 0 lifts it. "
                               "CUDA's initialization reserves virtual address space for unified "
                               "memory far beyond what the kernel uses, so memory_bytes would make it "
                               "fail.").tag(config=True)


#: Control nodes the CUDA runtime opens besides one /dev/nvidiaN per GPU.
NVIDIA_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")


def cuda_device_nodes(dev_dir="/dev", driver_dir="/proc/driver/nvidia/gpus"):
    """The device nodes a CUDA program needs, from the driver's own list of GPUs.

    The NVIDIA driver lists each GPU under ``driver_dir/<PCI address>/information``
    with a line ``Device Minor: N``; its node is ``dev_dir/nvidiaN``. To those the
    runtime adds the control nodes in :data:`NVIDIA_CONTROL_NODES`. Only nodes
    that exist are returned, and nothing else from ``dev_dir``: no GPU the driver
    does not list, no display (``nvidia-modeset``) or other device. No driver,
    no nodes.
    """
    minors = set()
    if os.path.isdir(driver_dir):
        for gpu in sorted(os.listdir(driver_dir)):
            info = os.path.join(driver_dir, gpu, "information")
            if not os.path.isfile(info):
                continue
            with open(info) as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.strip() == "Device Minor" and value.strip().isdigit():
                        minors.add(int(value))
    if not minors:
        return []
    names = list(NVIDIA_CONTROL_NODES) + [f"nvidia{m}" for m in sorted(minors)]
    return [os.path.join(dev_dir, n) for n in names if os.path.exists(os.path.join(dev_dir, n))]


@functools.lru_cache(maxsize=None)  # once per grading process, not per kernel
def check_bwrap(executable="bwrap"):
    """Raise SandboxUnavailable unless bwrap can build the namespaces we use."""
    path = shutil.which(executable)
    if path is None:
        raise SandboxUnavailable(f"`{executable}` was not found on PATH.\n{INSTALL_HINT}")
    namespaces, _ = _namespace_args(Sandbox(), 65534)
    probe = [path] + namespaces + ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"]
    result = subprocess.run(probe, capture_output=True, text=True)
    if result.returncode != 0:
        raise SandboxUnavailable(
            f"`{path}` is installed but cannot create namespaces here: {result.stderr.strip()}\n"
            "User namespaces may be disabled (sysctl kernel.unprivileged_userns_clone, or "
            "AppArmor's kernel.apparmor_restrict_unprivileged_userns on Ubuntu 24.04).\n"
            f"{INSTALL_HINT}")
    return path


def _python_roots(kernel_cmd):
    """Host folders the kernel's interpreter and packages live in."""
    roots = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    exe = shutil.which(kernel_cmd[0]) or kernel_cmd[0]
    for candidate in (exe, os.path.realpath(exe)):
        # .../bin/python -> the environment or installation it belongs to
        roots.add(os.path.dirname(os.path.dirname(candidate)))
    try:
        import bnref  # editable installs point outside site-packages
        roots.add(os.path.dirname(os.path.abspath(bnref.__file__)))
    except ImportError:
        pass
    # /usr is bound whole anyway; '/' would defeat the point of the sandbox
    return sorted(r for r in roots if r and r != "/" and os.path.isdir(r))


def _system_binds():
    """Read-only system folders, keeping merged-/usr symlinks as symlinks."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    # Only what a Python process reads from /etc: no shadow files, no keys.
    args += ["--perms", "0755", "--dir", "/etc"]
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group",
                 "nsswitch.conf", "hosts", "alternatives", "fonts", "ssl", "mime.types",
                 "matplotlibrc", "python3", "os-release"):
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def _mkdirs(path, made):
    """``--dir`` every missing ancestor of ``path`` with mode 0755.

    bwrap would create them mode 0700 owned by root, which an unprivileged
    kernel cannot traverse.
    """
    args = []
    parts = os.path.dirname(path).split(os.sep)
    for depth in range(2, len(parts) + 1):
        ancestor = os.sep.join(parts[:depth])
        if ancestor not in made:
            made.add(ancestor)
            args += ["--perms", "0755", "--dir", ancestor]
    return args


def kernel_uid(settings):
    """The host uid of one kernel (see :attr:`Sandbox.uid`)."""
    # RLIMIT_NPROC counts per uid across the machine: a shared uid would let
    # one fork bomb (or its children, still dying) starve the next kernel.
    return settings.uid if settings.uid >= 0 else 10**9 + secrets.randbelow(2**24)


def _namespace_args(settings, uid):
    """Namespaces and the unprivileged identity the kernel runs as.

    As root, an RLIMIT_NPROC does not bind a uid that maps to root, even in a
    user namespace; so bwrap runs privileged and setpriv switches to a plain
    uid after the mounts are made. As anyone else, bwrap's own user namespace
    gives the same effect.
    """
    common = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
              "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    if os.geteuid() == 0:
        uid = str(uid)
        drop = ["/usr/bin/setpriv", "--reuid", uid, "--regid", uid, "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
        return common, drop
    return common + ["--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"], []


def bwrap_command(settings, kernel_cmd, *, cwd, ipc_dir, uid, bwrap_path="bwrap", profile="plain"):
    """The full argv that runs ``kernel_cmd`` in the sandbox.

    Args:
        settings: a :class:`Sandbox` with the limits.
        kernel_cmd: the kernel's argv (from its kernelspec).
        cwd: the submission folder; the kernel sees a writable tmpfs there
            with the folder's entries bound read-only into it, notebooks excepted.
        ipc_dir: private host folder with the connection file and sockets.
        uid: host uid of the kernel when grading as root (:func:`kernel_uid`).
        profile: what the kernel may reach (:mod:`grader.hide`, :mod:`bnref.checking.lockdown`).
    """
    from grader import hide

    namespaces, drop = _namespace_args(settings, uid)
    args = [bwrap_path] + namespaces + ["--proc", "/proc", "--dev", "/dev"]
    gpu_nodes = cuda_device_nodes() if settings.gpu else []
    for node in gpu_nodes:
        args += ["--dev-bind", node, node]
    address_space = settings.gpu_memory_bytes if gpu_nodes else settings.memory_bytes
    args += _system_binds()
    # /dev/shm too: multiprocessing's semaphores (joblib, torch DataLoader) live there.
    for scratch in ("/tmp", "/dev/shm"):
        args += ["--perms", "1777", "--size", str(settings.scratch_bytes), "--tmpfs", scratch]
    made = {"/usr", "/etc", "/tmp", "/proc", "/dev", "/dev/shm"}
    for root in _python_roots(kernel_cmd) + list(settings.extra_ro_paths):
        args += _mkdirs(root, made) + ["--ro-bind", root, root]
        made.add(root)
    # Of the repository the kernel sees bnref (with its kernel side, bnref.checking)
    # and nothing of grader/; each profile hides more (grader/hide.py).
    args += hide.binds(profile)
    if cwd:
        cwd = os.path.abspath(cwd)
        args += _mkdirs(cwd, made)
        args += ["--perms", "1777", "--size", str(settings.scratch_bytes), "--tmpfs", cwd]
        for entry in sorted(os.listdir(cwd)):
            if entry.endswith(".ipynb"):
                # The notebook under grading holds the hidden blocks nbgrader restored; the
                # kernel gets its cells as messages and never needs the file.
                continue
            src = os.path.join(cwd, entry)
            args += ["--ro-bind", src, src]
        args += ["--chdir", cwd]
    args += _mkdirs(ipc_dir, made) + ["--bind", ipc_dir, ipc_dir]
    # jupyter_client's launcher sets JPY_PARENT_PID to the grader's PID, which
    # does not exist in the kernel's PID namespace: ipykernel would think it was
    # orphaned and exit. PID 1 tells it not to poll (bwrap kills it with us).
    # The kernel's uid has no passwd entry: getpass.getuser() reads these first.
    args += ["--setenv", "USER", "student", "--setenv", "LOGNAME", "student"]
    args += ["--setenv", "JPY_PARENT_PID", "1", "--setenv", "HOME", "/tmp",
             "--setenv", "IPYTHONDIR", "/tmp/.ipython",
             "--setenv", "MPLCONFIGDIR", "/tmp/.matplotlib", "--setenv", "TMPDIR", "/tmp", "--"]
    # prlimit runs inside, after the uid switch: hard limits the kernel
    # cannot raise again.
    args += drop + ["/usr/bin/prlimit", f"--as={address_space or 'unlimited'}",
                    f"--cpu={settings.cpu_seconds}", f"--nproc={settings.max_processes}",
                    f"--fsize={settings.file_bytes}", "--core=0", "--"]
    return args + list(kernel_cmd)


class SandboxKernelManager(AsyncKernelManager):
    """An AsyncKernelManager whose kernel lives in a bubblewrap sandbox."""

    #: The kernel profile (set by the executor before the kernel starts).
    profile = "plain"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sandbox = Sandbox(parent=self)
        self._bwrap = check_bwrap(self.sandbox.bwrap)
        self._ipc_dir = tempfile.mkdtemp(prefix="bn-sandbox-")
        # IPC sockets instead of TCP: the kernel has no network at all.
        self.transport = "ipc"
        self.connection_file = os.path.join(self._ipc_dir, "kernel.json")
        self.ip = os.path.join(self._ipc_dir, "kernel-ipc")

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        cwd = kw.pop("cwd", None)
        env = kw.get("env") or os.environ
        kw["env"] = {k: v for k, v in env.items() if k in ENV_KEEP or k.startswith("LC_")}
        kw["cwd"] = self._ipc_dir
        uid = kernel_uid(self.sandbox)
        if os.geteuid() == 0:  # the kernel runs as that uid and must read the key
            for path in (self._ipc_dir, self.connection_file):
                os.chown(path, uid, uid)
        cmd = bwrap_command(self.sandbox, kernel_cmd, cwd=cwd, ipc_dir=self._ipc_dir, uid=uid,
                            bwrap_path=self._bwrap, profile=self.profile)
        self.log.debug("Sandboxed kernel: %s", cmd)
        await super()._async_launch_kernel(cmd, **kw)

    async def _async_cleanup_resources(self, restart=False):
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)

    cleanup_resources = _async_cleanup_resources


#: The Execute preprocessor that grades in the sandbox, by import path.
SANDBOXED_EXECUTE = "grader.sandbox_execute.SandboxedExecute"


def enabled(c):
    """Whether the config (or NBGRADER_SANDBOX) leaves the sandbox on."""
    if os.environ.get("NBGRADER_SANDBOX", "").lower() in ("0", "off", "false", "no"):
        return False
    return Sandbox(config=c).enabled


def configure(c):
    """Put the sandbox into nbgrader's autograde pipeline (call from nbgrader_config.py).

    Replaces nbgrader's ``Execute`` preprocessor of ``Autograde`` with
    :class:`grader.sandbox_execute.SandboxedExecute`, keeping the rest of the
    list (and any preprocessors the course added) in place. When the running
    command is ``nbgrader autograde`` and bwrap does not work, it stops here
    with instructions instead of grading unprotected.
    """
    from nbgrader.converters.autograde import Autograde
    from nbgrader.preprocessors import Execute

    if not enabled(c):
        return
    if "autograde" in sys.argv[1:2]:
        try:
            check_bwrap(Sandbox(config=c).bwrap)
        except SandboxUnavailable as err:
            raise SystemExit(f"nbgrader autograde refused to start: {err}") from None
    current = c.Autograde.autograde_preprocessors if "autograde_preprocessors" in c.Autograde \
        else Autograde.class_traits()["autograde_preprocessors"].make_dynamic_default()
    # By name: nbconvert imports it when it registers the preprocessor, and
    # grader.sandbox_execute (which imports this module) is not imported here.
    c.Autograde.autograde_preprocessors = [
        SANDBOXED_EXECUTE if pp is Execute else pp for pp in current]
