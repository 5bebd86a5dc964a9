"""tools/public_export.py: the student-facing copy holds no solution and no hidden test,
its check finds a leak when one is planted, and the book builds from it."""

import json
import os
import re
import pathlib
import shutil
import subprocess
import sys

import pytest

from tools import public_export

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    dest = tmp_path_factory.mktemp("public") / "course"
    files = public_export.export(dest)
    return dest, files


def hidden_test_blocks():
    """Every check (grader/checks/) and every hidden-test block of every solution
    notebook, as stripped non-blank lines."""
    blocks = []
    for path in sorted((REPO / "grader" / "checks").glob("*.py")):  # code, not docstring quotes or imports
        blocks.append([line.strip() for line in path.read_text().splitlines() if line.strip()
                       and not line.strip().startswith(('"""', "import ", "from ", "#"))])
    for nb_path in sorted((REPO / "solutions").rglob("*.ipynb")):
        for cell in json.loads(nb_path.read_text())["cells"]:
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            hidden, _ = public_export._split_secret(source)
            blocks.extend([line.strip() for line in block if line.strip()] for block in hidden)
    return [b for b in blocks if b]


def test_instructor_side_is_absent(export):
    dest, files = export
    assert not (dest / "solutions").exists() and not (dest / "grader").exists()
    assert not (dest / "nbgrader_config.py").exists()
    assert (dest / "bnref" / "functional.py").is_file() and (dest / "assignments").is_dir()
    for test_file in (dest / "tests").glob("*.py"):
        text = test_file.read_text()
        assert not re.search(r"\bsolutions\b|\bgrader\b|independent_solutions", text), test_file
    readme = (dest / "README.md").read_text()
    assert "## For instructors" not in readme and "## More tools for instructors" not in readme and "## Two commands" in readme
    assert not (dest / ".git").exists(), "the export is a snapshot without history"


def test_no_hidden_test_text_anywhere(export):
    """Every file of the export, read as text, against every hidden-test block:
    no two consecutive lines of a hidden test appear in it."""
    dest, _ = export
    blocks = hidden_test_blocks()
    assert blocks, "the solution notebooks have hidden tests to look for"
    texts = {}
    for path in dest.rglob("*"):
        if path.is_file():
            try:
                texts[path] = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            except UnicodeDecodeError:
                continue
    public = set()
    for source in (REPO / "bnref").rglob("*.py"):
        public |= public_export._pairs(source.read_text().splitlines())
    for block in blocks:
        pairs = {p for p in zip(block, block[1:]) if p not in public and max(map(len, p)) >= 16}
        for path, lines in texts.items():
            found = pairs & set(zip(lines, lines[1:]))
            assert not found, f"{path.relative_to(dest)} holds hidden-test lines {sorted(found)[:2]}"


def test_a_planted_leak_is_found(export, tmp_path):
    dest, _ = export
    block = max(hidden_test_blocks(), key=len)
    leaky = tmp_path / "leaky"
    shutil.copytree(dest / "book", leaky / "book")
    with open(leaky / "book" / "ch01_input_normalization.md", "a") as f:
        f.write("\n```python\n" + "\n".join(block[:4]) + "\n```\n")
    leaks = public_export.find_leaks(leaky, public_export.secret_pairs())
    assert leaks and all(f == "book/ch01_input_normalization.md" for f, _ in leaks)


def test_export_without_the_exclusions_fails(monkeypatch, tmp_path):
    monkeypatch.setattr(public_export, "INSTRUCTOR_ONLY", ("grader/",))
    with pytest.raises(RuntimeError, match="solution or hidden-test"):
        public_export.export(tmp_path / "bad")


def test_refuses_a_non_empty_destination(tmp_path):
    (tmp_path / "keep.txt").write_text("someone's work")
    with pytest.raises(FileExistsError, match="not empty"):
        public_export.export(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "someone's work"


def test_book_builds_from_the_export(export):
    """A strict build of the book in the export. The chapters' execution cache of
    this checkout's build is reused when there is one (same code, same cache keys),
    so the test checks the export's files, not the chapters' run time again."""
    dest, _ = export
    cache = REPO / "_build" / ".jupyter_cache"
    if cache.is_dir():
        shutil.copytree(cache, dest / "_build" / ".jupyter_cache")
    env = dict(os.environ, TRITON_INTERPRET=os.environ.get("TRITON_INTERPRET", "1"))
    jb = pathlib.Path(sys.executable).parent / "jupyter-book"
    done = subprocess.run([str(jb), "build", ".", "--warningiserror", "--nitpick", "--keep-going"],
                          cwd=dest, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert (dest / "_build" / "html" / "index.html").is_file()
