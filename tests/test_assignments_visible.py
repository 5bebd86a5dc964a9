"""The visible tests catch every stated convention: ``nbgrader validate``, which a
student runs, fails on each typical mistake of the pipeline test that breaks
something the release text states, with a message that names the convention.

Each submission is the release completed from solutions/ with one mistake (the
same mutations the pipeline test grades), validated as a student would, in a
folder without the course's config. Mistakes that break a rule rather than a
convention (calling the reference, code that never returns, edited test cells)
are the hidden tests' business and are left out here.
"""

import concurrent.futures
import pathlib
import sys

import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _nbgrader import course_env, nbgrader, submission  # noqa: E402
from test_nbgrader_pipeline import A1, A1_STUDENTS, A2, A2_STUDENTS, A3, A3_STUDENTS  # noqa: E402

# (assignment, student) -> what the validation message must say
CONVENTIONS = {
    (A1, "unbiased_var"): "biased variance (divide by N",
    (A1, "eps_outside_sqrt"): "eps goes inside the square root",
    (A1, "stats_wrong_axis"): "mean of each feature over axis 0",
    (A1, "momentum_convention"): "momentum is the decay of the old value",
    (A1, "running_updated_in_test"): "test mode must not change",
    (A1, "running_var_unbiased"): "running_var is updated with the biased variance",
    (A1, "dgamma_shape"): "dgamma and dbeta must have gamma's shape",
    (A1, "dgamma_values"): "dgamma does not match the numerical gradient",
    (A1, "dx_missing_term"): "dx does not match the numerical gradient",
    (A1, "ln_wrong_axis"): "normalize each row over its features",
    (A2, "unbiased_var"): "biased variance (divide by N*H*W)",
    (A2, "momentum_convention"): "PyTorch's momentum convention",
    (A2, "biased_running_var"): "running_var uses the unbiased variance",
    (A2, "no_num_batches_tracked"): "num_batches_tracked must count the training steps",
    (A2, "running_updated_in_eval"): "eval mode must",
    (A2, "fold_linear_no_bias"): "a Linear with bias=False",
    (A2, "fold_ignores_stride"): "a Conv2d with stride=2",
    (A3, "unbiased_var"): "biased (divide by N)",
    (A3, "mask_missing"): "masked-out elements left out",
    (A3, "eps_outside_sqrt"): "eps goes inside the square root",
    (A3, "dx_missing_term"): "dx does not match autograd",
    (A3, "single_program_grid"): "the grid must cover every channel",
}
STUDENTS = {A1: A1_STUDENTS, A2: A2_STUDENTS, A3: A3_STUDENTS}


def validate(tmp_path, assignment, student):
    folder = tmp_path / f"{assignment}-{student}"
    folder.mkdir()
    changes = STUDENTS[assignment][student][0]
    nbformat.write(submission(assignment, changes), folder / f"{assignment}.ipynb")
    env = course_env(JUPYTER_CONFIG_DIR=str(folder / "jupyter"), OMP_NUM_THREADS="1")
    for attempt in range(3):
        done = nbgrader("validate", f"{assignment}.ipynb", cwd=folder, env=env, timeout=600, check=False)
        # jupyter_client picks a free TCP port and the kernel binds it a moment later;
        # another process can take it in between (two validations run at once here).
        # That race is the machine's, not the submission's: run the validation again.
        if "Address already in use" not in done.stdout + done.stderr:
            break
    if done.returncode != 0:
        raise AssertionError(f"nbgrader validate {assignment}.ipynb failed:\n{done.stdout[-6000:]}\n{done.stderr[-12000:]}")
    return done.stdout


@pytest.fixture(scope="module")
def validations(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    jobs = list(CONVENTIONS) + [(a, "full_solution") for a in STUDENTS] + [(a, "independent") for a in STUDENTS]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(jobs, pool.map(lambda job: validate(root, *job), jobs)))
    return results


def test_every_convention_mistake_fails_validation_naming_it(validations):
    missed = {}
    for (assignment, student), needle in CONVENTIONS.items():
        out = validations[assignment, student]
        if "VALIDATION FAILED" not in out or needle not in out:
            missed[assignment, student] = out[-1500:]
    assert not missed, f"validate did not fail with the convention's name: {missed}"


@pytest.mark.parametrize("student", ["full_solution", "independent"])
def test_correct_submissions_pass_validation(validations, student):
    for assignment in STUDENTS:
        out = validations[assignment, student]
        assert "Success! Your notebook passes all the tests." in out, f"{assignment} {student}:\n{out[-3000:]}"


def test_the_list_covers_the_pipeline_conventions():
    """Every typical mistake that scores less at grading is either here or a rule."""
    rules = {"calls_reference", "calls_batch_norm", "calls_bnref_triton", "loops_forever", "edits_test_cell",
             "deletes_test_cell", "duplicates_cells", "autograd_backward", "torch_in_numpy", "stats_in_torch",
             "backward_in_torch", "channel_bug", "stats_wrong_axis", "full_solution", "independent",
             "untouched_release"}
    for assignment, students in STUDENTS.items():
        for student in students:
            assert student in rules or (assignment, student) in CONVENTIONS, (assignment, student)
