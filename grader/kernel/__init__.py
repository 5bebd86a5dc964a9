"""The only part of ``grader`` that the grading kernel can see.

Inside the sandbox the student's kernel gets this package and nothing else
of ``grader/``: a codec that turns values into plain data, a driver that
calls the student's functions on the inputs the trusted side sends and
returns the outputs as data, and the lockdown each kernel profile applies
before any student code runs. Nothing here knows an expected value or a
rule of a hidden test; the verdicts are computed outside the kernel, by
:mod:`grader.checks` in the grading process.
"""
