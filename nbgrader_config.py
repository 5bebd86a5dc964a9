"""nbgrader configuration of the course (run nbgrader from the repository root).

Layout: ``solutions/<assignment>/<notebook>.ipynb`` is nbgrader's source
directory (solutions and hidden tests: instructors only),
``assignments/<assignment>/`` its release directory (generated, committed).
What grading produces (``submitted/``, ``autograded/``, ``feedback/``,
``gradebook.db``) stays out of git (see .gitignore).

Another config can build on this one and override the paths, as the
pipeline test does::

    c = get_config()
    load_subconfig("/path/to/repo/nbgrader_config.py")
    c.CourseDirectory.root = "/tmp/course"
"""

import os
import sys

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.converters import Autograde, GenerateAssignment
from nbgrader.preprocessors import GetGrades

_REPO = os.path.dirname(os.path.abspath(__file__))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
# The grading kernel imports bnref (bnref.checking answers the checks); it inherits
# this environment.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_REPO, os.environ.get("PYTHONPATH", "")) if p
)

from grader.course import COURSE_ID  # noqa: E402
from grader.preprocessors import DeduplicateIds, HideHiddenTests, InsertRepositoryURL  # noqa: E402

c = get_config()  # noqa: F821 (injected by traitlets)

c.CourseDirectory.course_id = COURSE_ID
c.CourseDirectory.root = _REPO
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"

# Release notebooks get the repository URL from _config.yml (one place).
c.GenerateAssignment.preprocessors = [InsertRepositoryURL] + list(
    GenerateAssignment.class_traits()["preprocessors"].default()
)
# The stub students see in place of each solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Grading: a cell that runs longer than this scores 0 and the rest of the
# notebook is graded. In the sandbox (below) the kernel is killed rather than
# interrupted (student code can catch an interrupt); a fresh kernel replays
# every earlier code cell except those that killed a kernel (cells that raised
# are replayed too, since they may define names later cells need) and grading
# goes on with the next cell.
c.ExecutePreprocessor.timeout = 60
c.Execute.timeout = 60
# A deleted test cell is put back (and graded) from the gradebook's copy.
# A duplicated graded cell is graded once (nbgrader 0.9.6's own
# DeduplicateIds makes the notebook fail validation instead).
c.Autograde.sanitize_preprocessors = [
    DeduplicateIds if p.__name__ == "DeduplicateIds" else p
    for p in Autograde.class_traits()["sanitize_preprocessors"].default()
]
c.OverwriteCells.add_missing_cells = True

# Hidden tests draw their cases from one seed per grading run, drawn here from
# fresh entropy and printed by each hidden test; GRADER_SEED=<seed> in the
# environment regrades with the same cases (grader/hidden.py).
import grader.hidden  # noqa: E402

grader.hidden.ensure_grading_seed()

# Feedback shows each test's verdict and message, never hidden test code.
c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]

# Student code is graded inside a bubblewrap sandbox (grader/sandbox.py,
# book/assignments/sandbox.md): no network, no view of solutions/, the
# gradebook or other submissions, capped memory, processes, CPU and output.
# To switch it off knowingly: c.Sandbox.enabled = False above this line, or
# NBGRADER_SANDBOX=off in the environment.
import grader.sandbox  # noqa: E402

grader.sandbox.configure(c)

# Collect and autograde never follow a link or read a special file planted in
# the exchange or in submitted/ (grader/exchange.py).
from grader.exchange import RefuseLinks  # noqa: E402

c.ExchangeFactory.collect = "grader.exchange.SafeCollect"
c.Autograde.sanitize_preprocessors = [RefuseLinks] + list(c.Autograde.sanitize_preprocessors)
