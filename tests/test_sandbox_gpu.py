"""grader/gpu.py on fake driver trees: which device nodes a sandboxed CUDA kernel gets.

The oracle is the fake tree itself: the driver lists GPUs with minors 0 and 3,
so exactly nvidiactl, the UVM nodes and nvidia0/nvidia3 are bound, nothing else
from /dev, and nothing at all when the driver lists no GPU."""

import os

from grader import gpu


def fake_tree(tmp_path, minors=(0, 3), nodes=("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools",
                                                "nvidia0", "nvidia1", "nvidia3", "nvidia-modeset",
                                                "sda", "mem", "tty")):
    dev, proc = tmp_path / "dev", tmp_path / "proc"
    dev.mkdir()
    proc.mkdir()
    for name in nodes:
        (dev / name).write_text("")
    for i, minor in enumerate(minors):
        folder = proc / f"0000:{i:02x}:00.0"
        folder.mkdir()
        (folder / "information").write_text(
            f"Model: \t\t NVIDIA H200\nIRQ:   \t\t 42\nGPU UUID: \t GPU-{i}\n"
            f"Video BIOS: \t 96.00.00.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\n"
            f"Device Minor: \t {minor}\nBlacklisted:\t No\n")
    return str(dev), str(proc)


def test_binds_exactly_the_listed_gpus_and_control_nodes(tmp_path):
    dev, proc = fake_tree(tmp_path)
    nodes = gpu.cuda_device_nodes(dev=dev, proc=proc)
    assert sorted(os.path.basename(n) for n in nodes) == sorted(
        ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia0", "nvidia3"])
    args = gpu.bwrap_args(nodes)
    assert args[:3] == ["--dev-bind", nodes[0], nodes[0]] and len(args) == 3 * len(nodes)


def test_no_driver_no_nodes(tmp_path):
    dev, proc = fake_tree(tmp_path, minors=())
    assert gpu.cuda_device_nodes(dev=dev, proc=proc) == []
    assert gpu.cuda_device_nodes(dev=dev, proc=str(tmp_path / "absent")) == []


def test_missing_control_node_means_no_cuda(tmp_path):
    dev, proc = fake_tree(tmp_path, nodes=("nvidia0", "nvidia-uvm"))
    assert gpu.cuda_device_nodes(dev=dev, proc=proc) == []


def test_mig_capabilities_only_on_request(tmp_path):
    dev, proc = fake_tree(tmp_path)
    caps = tmp_path / "dev" / "nvidia-caps"
    caps.mkdir()
    (caps / "nvidia-cap1").write_text("")
    plain = gpu.cuda_device_nodes(dev=dev, proc=proc)
    with_mig = gpu.cuda_device_nodes(dev=dev, proc=proc, mig=True)
    assert str(caps / "nvidia-cap1") not in plain and str(caps / "nvidia-cap1") in with_mig


def test_this_machine(capsys):
    """On a machine without an NVIDIA driver (CI) the list is empty; with one it holds nvidiactl."""
    nodes = gpu.cuda_device_nodes()
    if os.path.isdir("/proc/driver/nvidia/gpus") and os.listdir("/proc/driver/nvidia/gpus"):
        assert "/dev/nvidiactl" in nodes
    else:
        assert nodes == []


def test_sandbox_command_binds_the_nodes_and_lifts_only_the_address_space_cap(tmp_path, monkeypatch):
    from grader import sandbox

    settings = sandbox.Sandbox()
    plain = sandbox.bwrap_command(settings, ["python3"], cwd=None, ipc_dir=str(tmp_path), uid=10**9)
    monkeypatch.setattr(gpu, "cuda_device_nodes", lambda **kw: ["/dev/nvidiactl", "/dev/nvidia0"])
    with_gpu = sandbox.bwrap_command(settings, ["python3"], cwd=None, ipc_dir=str(tmp_path), uid=10**9)
    assert "--dev-bind" not in plain and f"--as={4 << 30}" in plain
    assert with_gpu[with_gpu.index("/dev/nvidiactl") - 1] == "--dev-bind"
    assert "--as=unlimited" in with_gpu
    # every other limit is the same
    limits = [a for a in plain if a.startswith(("--cpu=", "--nproc=", "--fsize=", "--core="))]
    assert limits and all(a in with_gpu for a in limits)
    settings.gpu = "off"
    assert "--dev-bind" not in sandbox.bwrap_command(settings, ["python3"], cwd=None,
                                                     ipc_dir=str(tmp_path), uid=10**9)
