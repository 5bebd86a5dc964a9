"""The NVIDIA device nodes a CUDA process needs, read from the driver's own list.

A grading kernel that should time a student's kernel on the GPU needs a few
character devices from ``/dev`` and nothing else from it:

- ``/dev/nvidiactl``, the driver's control node;
- ``/dev/nvidia-uvm`` (and ``/dev/nvidia-uvm-tools`` where it exists), unified
  memory, which the CUDA runtime opens at initialization;
- ``/dev/nvidia<minor>`` for each GPU, with the minor numbers the driver lists
  in ``/proc/driver/nvidia/gpus/<bus id>/information`` ("Device Minor: N");
- ``/dev/nvidia-caps/*`` only when MIG capabilities are in use.

This is the list NVIDIA's container toolkit binds into a container for
compute. Anything else under ``/dev`` (disks, ``/dev/mem``, terminals) stays
out of the sandbox.
"""

import os
import re

CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")


def gpu_minors(proc="/proc/driver/nvidia/gpus"):
    """The device minor numbers of the GPUs the driver lists, sorted."""
    minors = set()
    if not os.path.isdir(proc):
        return []
    for bus_id in sorted(os.listdir(proc)):
        info = os.path.join(proc, bus_id, "information")
        try:
            text = open(info, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        match = re.search(r"^Device Minor:\s*(\d+)\s*$", text, re.MULTILINE)
        if match:
            minors.add(int(match.group(1)))
    return sorted(minors)


def cuda_device_nodes(dev="/dev", proc="/proc/driver/nvidia/gpus", mig=False):
    """Paths of the device nodes to bind for CUDA, existing ones only; [] without a driver.

    Args:
        dev: the device folder (a fake one in tests).
        proc: the driver's GPU list in procfs.
        mig: also bind ``/dev/nvidia-caps/*`` (MIG compute instances).
    """
    minors = gpu_minors(proc)
    if not minors:
        return []
    names = list(CONTROL_NODES) + [f"nvidia{m}" for m in minors]
    nodes = [os.path.join(dev, n) for n in names if os.path.exists(os.path.join(dev, n))]
    caps = os.path.join(dev, "nvidia-caps")
    if mig and os.path.isdir(caps):
        nodes += [os.path.join(caps, n) for n in sorted(os.listdir(caps))]
    if os.path.join(dev, "nvidiactl") not in nodes:
        return []  # a driver listing GPUs without its control node cannot run CUDA
    return nodes


def bwrap_args(nodes):
    """bwrap arguments that bind each device node at the same path."""
    args = []
    for node in nodes:
        args += ["--dev-bind", node, node]
    return args
