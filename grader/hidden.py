"""Randomness for hidden tests: fresh at every grading, reproducible on demand.

A hidden test never draws from a generator the notebook can reach (the
notebook sets ``torch.manual_seed(0)`` and NumPy generators of its own, so
cases drawn from those would be the same at every grading, and computable by
the student). Instead each grading kernel draws one seed from the operating
system's entropy (:mod:`secrets`) the first time a hidden test asks for it;
every hidden test derives its own generator from that seed and its part's
name, and prints the seed, so the instructor finds it in the graded
notebook's output:

    hidden tests of bn_forward_train: seed 8319427514 (regrade with GRADER_SEED=8319427514)

Within one ``nbgrader autograde`` run the seed is drawn once, in the grader
(``nbgrader_config.py`` calls :func:`ensure_grading_seed`), so a kernel that
is restarted after a crash keeps drawing the same cases. A regrade with that
seed in the environment (the sandbox passes
``GRADER_SEED`` through to the kernel) draws exactly the same cases::

    GRADER_SEED=8319427514 nbgrader autograde a1_batchnorm_numpy --student=... --force

The functions here take and return plain values, so the same seeds work when
the checks run outside the student's process.
"""

import os
import secrets
import zlib

SEED_ENV = "GRADER_SEED"
_kernel_seed = None


def grading_seed():
    """The seed of this grading: ``GRADER_SEED`` if set, else fresh entropy (once per kernel)."""
    global _kernel_seed
    text = os.environ.get(SEED_ENV, "").strip()
    if text:
        if not text.isdigit():
            raise ValueError(f"{SEED_ENV} must be a non-negative integer, got {text!r}")
        return int(text)
    if _kernel_seed is None:
        _kernel_seed = secrets.randbits(48)
    return _kernel_seed


def ensure_grading_seed(environ=None):
    """Put a fresh seed in ``GRADER_SEED`` unless one is set (a regrade); return it."""
    environ = os.environ if environ is None else environ
    if not environ.get(SEED_ENV, "").strip():
        environ[SEED_ENV] = str(secrets.randbits(48))
    return environ[SEED_ENV]


def part_seed(part, seed=None):
    """The seed of one part's cases: the grading seed mixed with the part's name."""
    seed = grading_seed() if seed is None else int(seed)
    return (seed * 1_000_003 + zlib.crc32(part.encode())) % 2**63


def announce(part, seed=None):
    """Print (for the graded notebook) and return the grading seed."""
    seed = grading_seed() if seed is None else int(seed)
    print(f"hidden tests of {part}: seed {seed} (regrade with {SEED_ENV}={seed})")
    return seed


def numpy_rng(part):
    """A NumPy generator for the hidden tests of ``part``; prints the seed."""
    import numpy as np

    return np.random.default_rng(part_seed(part, announce(part)))


def torch_generator(part):
    """A torch CPU generator for the hidden tests of ``part``; prints the seed."""
    import torch

    return torch.Generator().manual_seed(part_seed(part, announce(part)))
