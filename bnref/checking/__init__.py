"""Answering graded checks with data: the student's side of grading and of the check service.

Nothing here knows an expected value or a rule of a hidden test; the
verdicts are computed elsewhere, by :mod:`grader.checks` (the instructor's
private code) in the grading process or in the check service.

Modules:
    codec     values as plain JSON data, and a strict decoder.
    driver    runs a request's cases against the notebook's functions.
    client    ``Checker``: ask the course's check service for cases, answer
              them locally, print the verdict (readers of the online book).
    lockdown  what a grading kernel profile switches off before student code runs.
"""
