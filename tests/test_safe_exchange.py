"""Planted links and special files in the exchange and in submitted/: collect copies
none of them, refuses oversized files, loses no other student's work, and autograde
refuses a submission folder that holds one (nbgrader's real commands, course config)."""

import hashlib
import os
import pathlib
import shutil
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from grader.course import COURSE_ID  # noqa: E402
from _nbgrader import make_course, nbgrader  # noqa: E402

A1 = "a1_batchnorm_numpy"
MAX_FILE_KB = 2000


def run(*args, cwd, env, ok=True):
    done = nbgrader(*args, cwd=cwd, env=env, check=ok, timeout=600)
    return done.returncode, done.stdout + done.stderr


def digest(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("exchange")
    made = make_course(root, CourseDirectory__max_file_size=MAX_FILE_KB)
    course_dir, exchange, env = made["dir"], made["exchange"], made["env"]
    flags = [f"--Exchange.root={exchange}", f"--course={COURSE_ID}"]
    run("generate_assignment", A1, "--force", cwd=course_dir, env=env)
    run("release_assignment", A1, "--force", cwd=course_dir, env=env)
    fetched = root / "fetched"
    fetched.mkdir()
    run("fetch_assignment", A1, *flags, cwd=fetched, env=env)
    submitted_hashes = {}
    for student in ("honest", "planter", "link_entry"):
        home = root / "students" / student
        shutil.copytree(fetched / A1, home / A1)
        run("submit", A1, f"--student={student}", *flags, cwd=home, env=env)
        submitted_hashes[student] = {p.name: digest(p) for p in (home / A1).glob("*.ipynb")}
    inbound = exchange / COURSE_ID / "inbound"
    (planter,) = inbound.glob(f"planter+{A1}+*")
    (solution_nb,) = (course_dir / "solutions" / A1).glob("*.ipynb")
    (planter / "solution_copy.ipynb").symlink_to(solution_nb)
    (planter / "gradebook.db").symlink_to(course_dir / "gradebook.db")
    (planter / "all_solutions").symlink_to(course_dir / "solutions", target_is_directory=True)
    os.mkfifo(planter / "pipe")
    (planter / "big.bin").write_bytes(b"\0" * (MAX_FILE_KB * 1000 + 1))
    (planter / "notes.txt").write_text("an ordinary file")
    # An inbound entry that is itself a link, to another student's submission.
    (link_entry,) = inbound.glob(f"link_entry+{A1}+*")
    shutil.rmtree(link_entry)
    (honest,) = inbound.glob(f"honest+{A1}+*")
    link_entry.symlink_to(honest, target_is_directory=True)
    _, log = run("collect", A1, *flags, cwd=course_dir, env=env)
    return dict(root=root, dir=course_dir, env=env, log=log, hashes=submitted_hashes,
                solution=solution_nb)


def test_collect_copies_no_link_and_no_special_file(course):
    folder = course["dir"] / "submitted" / "planter" / A1
    names = {p.name for p in folder.iterdir()}
    assert "notes.txt" in names and f"{A1}.ipynb" in names
    for planted in ("solution_copy.ipynb", "gradebook.db", "all_solutions", "pipe", "big.bin"):
        assert planted not in names, f"{planted} was collected"
    solution_digest = digest(course["solution"])
    for path in folder.rglob("*"):
        assert not path.is_symlink()
        if path.is_file():
            assert digest(path) != solution_digest
    for planted in ("solution_copy.ipynb", "gradebook.db", "all_solutions", "pipe"):
        assert f"{planted} is a " in course["log"], course["log"]
    assert "big.bin is" in course["log"] and "max_file_size" in course["log"]


def test_a_linked_inbound_entry_is_refused_and_nobody_loses_work(course):
    assert not (course["dir"] / "submitted" / "link_entry" / A1).exists()
    assert "Refusing submission" in course["log"]
    honest = course["dir"] / "submitted" / "honest" / A1
    assert {p.name: digest(p) for p in honest.glob("*.ipynb")} == course["hashes"]["honest"]
    planter = course["dir"] / "submitted" / "planter" / A1
    assert {p.name: digest(p) for p in planter.glob("*.ipynb")} == course["hashes"]["planter"]


def test_autograde_refuses_a_folder_with_a_link(course):
    """A link placed in submitted/ by any other route stops that submission only."""
    sneaky = course["dir"] / "submitted" / "sneaky" / A1
    shutil.copytree(course["dir"] / "submitted" / "honest" / A1, sneaky)
    (sneaky / "data.txt").symlink_to(course["dir"] / "gradebook.db")
    env = dict(course["env"], NBGRADER_SANDBOX=os.environ.get("NBGRADER_SANDBOX", "on"))
    code, log = run("autograde", A1, "--force", cwd=course["dir"], env=env, ok=False)
    assert code != 0 and "not graded: the submission of sneaky" in log, log[-3000:]
    assert not (course["dir"] / "autograded" / "sneaky" / A1).exists()
    assert (course["dir"] / "autograded" / "honest" / A1 / f"{A1}.ipynb").is_file()
