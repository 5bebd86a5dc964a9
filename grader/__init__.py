"""nbgrader extensions and hidden-test helpers for the course's assignments.

Modules:
    course         the course settings the assignments are generated with
                   (repository URL read from ``_config.yml``).
    preprocessors  nbgrader preprocessors: fill the repository URL into the
                   release notebooks, keep hidden tests out of feedback.
    guards         used by hidden tests: fail a part that calls the reference
                   implementation (or, in A3, computes outside Triton
                   kernels), and stand-ins for a student's own helpers so
                   that one bug costs one part.
    hidden         the hidden tests' randomness: a fresh seed per grading,
                   printed, and GRADER_SEED to regrade with the same cases.
    sandbox        the bubblewrap sandbox the grading kernel runs in, and
    sandbox_execute  nbgrader's Execute preprocessor hardened to use it.
"""
