"""nbgrader extensions and hidden-test helpers for the course's assignments.

Modules:
    course         the course settings the assignments are generated with
                   (repository URL read from ``_config.yml``).
    preprocessors  nbgrader preprocessors: fill the repository URL into the
                   release notebooks, keep hidden tests out of feedback.
    guards         used by hidden tests: fail a part that calls the reference
                   implementation, and stand-ins for a student's own helpers
                   so that one bug costs one part.

``grader/sandbox*.py`` (a later issue) isolates the grading kernel.
"""
