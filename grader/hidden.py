"""Randomness for hidden tests: fresh at every grading, reproducible on demand.

The checks (:mod:`grader.checks`) draw their cases in the grading process,
never in the student's kernel, from one seed per ``nbgrader autograde`` run:
``nbgrader_config.py`` calls :func:`ensure_grading_seed`, which draws it
from the operating system's entropy (:mod:`secrets`) unless ``GRADER_SEED``
is set. Every check derives its own generator from that seed and its part's
name, and the graded cell shows the seed:

    hidden tests of bn_forward_train: seed 8319427514 (regrade with GRADER_SEED=8319427514)

A regrade with that seed in the environment draws exactly the same cases::

    GRADER_SEED=8319427514 nbgrader autograde a1_batchnorm_numpy --student=... --force
"""

import os
import secrets
import zlib

SEED_ENV = "GRADER_SEED"
_process_seed = None


def grading_seed():
    """The seed of this grading: ``GRADER_SEED`` if set, else fresh entropy (once per process)."""
    global _process_seed
    text = os.environ.get(SEED_ENV, "").strip()
    if text:
        if not text.isdigit():
            raise ValueError(f"{SEED_ENV} must be a non-negative integer, got {text!r}")
        return int(text)
    if _process_seed is None:
        _process_seed = secrets.randbits(48)
    return _process_seed


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
