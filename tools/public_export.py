"""Write the student-facing copy of this course: everything but the instructor's side.

    .venv/bin/python tools/public_export.py DEST        (or: make public DEST=...)

A live course keeps this repository private, because ``solutions/`` holds every
solution and hidden test, and publishes the copy this command writes. The copy
is a snapshot of the files git tracks here (no history, so nothing deleted
earlier can be recovered from it), without:

- ``solutions/`` (solutions, hidden tests, rubrics and model answers), ``grader/``
  (the grading extensions and their correct stand-ins), ``nbgrader_config.py``
  and the instructor's tools (see ``INSTRUCTOR_ONLY``);
- the tests that need any of those (a test file that mentions them);
- the README's two sections for instructors.

Then it checks its own output: no two consecutive lines of a hidden test,
a solution body or a mark scheme (other than lines the release notebooks and
``bnref``, the public reference package, show anyway) may appear in any
exported file. It refuses to write into a
non-empty folder, and it fails, leaving what it wrote for inspection, when
the check finds a leak.
"""

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent

INSTRUCTOR_ONLY = ("solutions/", "grader/", "nbgrader_config.py", "tools/regenerate_assignments.py",
                   "tools/copy_report.py", "tools/public_export.py", "service/", "benchmarks/check_service_load.py", "benchmarks/grading_time.py",
                   "tests/independent_solutions.py")  # a complete solution of every assignment
# A test file that names any of these needs the instructor's side to run.
INSTRUCTOR_MARKERS = re.compile(r"\bsolutions\b|\bgrader\b|nbgrader_config|copy_report|public_export")
MIN_LINE = 16  # shorter lines ("return dx", "import numpy as np") are not evidence of a leak


def tracked_files(repo=REPO):
    out = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def is_exported(path, repo=REPO):
    if any(path == p.rstrip("/") or path.startswith(p) for p in INSTRUCTOR_ONLY):
        return False
    if path.startswith("tests/") and path.endswith(".py"):
        text = (repo / path).read_text(encoding="utf-8")
        return not INSTRUCTOR_MARKERS.search(text)
    return True


def student_readme(text):
    """The README without its sections for instructors."""
    return re.sub(r"\n## (For instructors|More tools for instructors)\n.*?(?=\n## |\Z)", "\n", text,
                  flags=re.S)


def _cell_sources(nb_path):
    nb = json.loads(pathlib.Path(nb_path).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        source = cell.get("source", "")
        yield source if isinstance(source, str) else "".join(source)


def _pairs(lines):
    """Consecutive pairs of non-blank stripped lines."""
    kept = [line.strip() for line in lines if line.strip()]
    return set(zip(kept, kept[1:]))


SECRET_BLOCKS = (("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"),
                 ("### BEGIN SOLUTION", "### END SOLUTION"),
                 ("=== BEGIN MARK SCHEME ===", "=== END MARK SCHEME ==="))


def _split_secret(source):
    """(lines inside secret blocks, as blocks; lines outside them) of one cell's source."""
    blocks, outside, current = [], [], None
    for line in source.splitlines():
        if any(begin in line for begin, _ in SECRET_BLOCKS):
            current = []
        elif any(end in line for _, end in SECRET_BLOCKS) and current is not None:
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
        else:
            outside.append(line)
    return blocks, outside


def secret_pairs(repo=REPO):
    """Pairs of consecutive lines of every check (grader/checks/), hidden test and solution body.

    A pair counts only if one of its lines has at least MIN_LINE characters and
    the pair is not public anyway: in bnref, in a release notebook, or in a
    solution notebook outside its secret blocks (the release shows that part).
    A single line is no evidence (``if torch.cuda.is_available():`` appears in
    many files); two consecutive lines of a hidden test are.
    """
    public = set()
    for source in (repo / "bnref").rglob("*.py"):
        public |= _pairs(source.read_text(encoding="utf-8").splitlines())
    for nb_path in (repo / "assignments").rglob("*.ipynb"):
        for source in _cell_sources(nb_path):
            public |= _pairs(source.splitlines())
    secrets = set()
    # The hidden tests proper: every check, with its reference values and answers.
    for source in sorted((repo / "grader" / "checks").glob("*.py")):
        code = [line for line in source.read_text(encoding="utf-8").splitlines()
                if not line.strip().startswith(('"""', "import ", "from ", "#"))]
        secrets |= _pairs(code)
    for nb_path in (repo / "solutions").rglob("*.ipynb"):
        for source in _cell_sources(nb_path):
            blocks, outside = _split_secret(source)
            public |= _pairs(outside)
            for block in blocks:
                secrets |= _pairs(block)
    return {pair for pair in secrets - public if max(len(pair[0]), len(pair[1])) >= MIN_LINE}


def find_leaks(dest, secrets):
    """(file, first line of the pair) for every secret pair of lines in an exported file."""
    leaks = []
    for path in sorted(pathlib.Path(dest).rglob("*")):
        if not path.is_file() or ".git" in path.relative_to(dest).parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        pairs = _pairs(text.splitlines())
        if path.suffix == ".ipynb":  # JSON strings: look at the decoded cell sources too
            for source in _cell_sources(path):
                pairs |= _pairs(source.splitlines())
        leaks.extend((str(path.relative_to(dest)), pair[0]) for pair in sorted(pairs & secrets))
    return leaks


def export(dest, repo=REPO):
    dest = pathlib.Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"DEST {dest} is not empty: export into a new or empty folder")
    files = [p for p in tracked_files(repo) if is_exported(p, repo)]
    for rel in files:
        source, target = repo / rel, dest / rel
        if source.is_symlink() or not source.is_file():
            continue  # git tracks it, but only a regular file is copied
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    readme = dest / "README.md"
    if readme.exists():
        readme.write_text(student_readme(readme.read_text(encoding="utf-8")), encoding="utf-8")
    leaks = find_leaks(dest, secret_pairs(repo))
    if leaks:
        shown = "\n".join(f"  {f}: {line}" for f, line in leaks[:20])
        raise RuntimeError(f"the export in {dest} holds {len(leaks)} solution or hidden-test "
                           f"line(s):\n{shown}")
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest")
    args = parser.parse_args(argv)
    files = export(args.dest)
    print(f"wrote {len(files)} files to {args.dest}; no solution or hidden-test line found in them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
