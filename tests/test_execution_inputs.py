"""The book's execution cache keys each chapter on the package code it imports.

A tiny book in a temporary folder uses the same Sphinx extension as the real
one (``tools/execution_inputs.py``, registered in ``_config.yml``), with a
small package named ``bnref`` beside it that the kernel imports first. Each
chapter prints a nanosecond time stamp: a stamp that stays the same over a
rebuild proves the outputs came from the cache, a new one that the chapter ran.
"""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import execution_inputs as ei  # noqa: E402

JUPYTER_BOOK = pathlib.Path(sys.executable).parent / "jupyter-book"

NOTEBOOK = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# {title}

```{{code-cell}} ipython3
{code}
import time
print("stamp", time.time_ns())
```
"""


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def tiny_book(tmp_path):
    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    assert config["sphinx"]["local_extensions"] == {"execution_inputs": "tools/"}, \
        "the real book must register the extension this test exercises"
    _write(tmp_path / "_config.yml", yaml.safe_dump({
        "title": "tiny",
        "only_build_toc_files": True,
        "execute": {"execute_notebooks": "cache", "timeout": 60},
        "sphinx": {"local_extensions": {"execution_inputs": str(REPO / "tools")}},
    }))
    _write(tmp_path / "_toc.yml", "format: jb-book\nroot: intro\nchapters:\n"
                                  "  - file: uses_values\n  - file: plain\n")
    _write(tmp_path / "intro.md", "# Tiny\n\nNo code here.\n")
    _write(tmp_path / "uses_values.md", NOTEBOOK.format(
        title="Uses values", code='from bnref.values import VALUE\nprint("value", VALUE)'))
    _write(tmp_path / "plain.md", NOTEBOOK.format(title="Plain", code="import math"))
    _write(tmp_path / "bnref" / "__init__.py", "")
    _write(tmp_path / "bnref" / "values.py", "from .base import ONE\nVALUE = ONE\n")
    _write(tmp_path / "bnref" / "base.py", "ONE = 1\n")
    _write(tmp_path / "bnref" / "other.py", "OTHER = 1\n")
    _write(tmp_path / "requirements.txt", "numpy==1.0\n")
    return tmp_path


def _build(book):
    env = dict(os.environ, PYTHONPATH="")
    return subprocess.run([str(JUPYTER_BOOK), "build", str(book), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, env=env, timeout=300)


def _outputs(book):
    """{chapter: (printed value or None, stamp)} read from the built pages."""
    result = {}
    for name in ("uses_values", "plain"):
        html = (book / "_build" / "html" / f"{name}.html").read_text(encoding="utf-8")
        value = re.search(r"value (\d+)", html)
        stamp = re.search(r"stamp (\d+)", html).group(1)
        result[name] = (value.group(1) if value else None, stamp)
    return result


def test_a_package_change_re_executes_exactly_the_chapters_that_import_it(tiny_book):
    first = _build(tiny_book)
    assert first.returncode == 0, first.stdout + first.stderr
    built = _outputs(tiny_book)
    assert built["uses_values"][0] == "1"

    # A change to a module the chapter imports through another one.
    _write(tiny_book / "bnref" / "base.py", "ONE = 2\n")
    second = _build(tiny_book)
    assert second.returncode == 0, second.stdout + second.stderr
    rebuilt = _outputs(tiny_book)
    assert rebuilt["uses_values"][0] == "2", "the chapter kept its stale output"
    assert rebuilt["uses_values"][1] != built["uses_values"][1]
    assert rebuilt["plain"] == built["plain"], "a chapter that imports nothing re-ran"

    # A module no chapter imports: nothing runs again.
    _write(tiny_book / "bnref" / "other.py", "OTHER = 2\n")
    third = _build(tiny_book)
    assert third.returncode == 0, third.stdout + third.stderr
    assert _outputs(tiny_book) == rebuilt

    # A change that breaks the chapter fails the build instead of keeping old outputs.
    _write(tiny_book / "bnref" / "base.py", "raise RuntimeError('broken base')\n")
    fourth = _build(tiny_book)
    assert fourth.returncode != 0
    assert "uses_values" in fourth.stdout + fourth.stderr


def test_the_pinned_requirements_are_an_input_of_every_chapter(tmp_path):
    package = tmp_path / "bnref"
    _write(package / "__init__.py", "")
    lock = tmp_path / "requirements.lock"
    _write(lock, "numpy==2.4.6\n")
    chapter = "```{code-cell} ipython3\nimport math\n```\n"
    before = ei.inputs_hash(chapter, package, [lock, tmp_path / "missing.txt"])
    _write(lock, "numpy==2.4.7\n")
    assert ei.inputs_hash(chapter, package, [lock, tmp_path / "missing.txt"]) != before


def test_dependency_files_follow_imports_inside_the_package(tmp_path):
    package = tmp_path / "bnref"
    _write(package / "__init__.py", "")
    _write(package / "a.py", "def f():\n    from bnref import b\n")
    _write(package / "b.py", "from . import c\n")
    _write(package / "c.py", "import numpy\n")
    _write(package / "sub" / "__init__.py", "from .d import D\n")
    _write(package / "sub" / "d.py", "D = 1\n")
    _write(package / "unused.py", "")
    names = lambda files: sorted(str(f.relative_to(tmp_path)) for f in files)  # noqa: E731
    assert names(ei.dependency_files({"bnref.a.f"}, package)) == [
        "bnref/__init__.py", "bnref/a.py", "bnref/b.py", "bnref/c.py"]
    assert names(ei.dependency_files({"bnref.sub"}, package)) == [
        "bnref/__init__.py", "bnref/sub/__init__.py", "bnref/sub/d.py"]


def test_every_chapter_of_the_book_imports_bnref():
    """So every chapter's key includes bnref code: the claim the README makes."""
    chapters = sorted((REPO / "book").glob("ch*.md"))
    assert chapters
    for path in chapters:
        text = path.read_text(encoding="utf-8")
        modules = set()
        for cell in ei.code_cells(text):
            modules |= ei.imported_modules(cell, "bnref")
        assert ei.is_notebook(text) and modules, f"{path.name} imports nothing from bnref"


def test_a_data_folder_counts_with_every_file_in_it(tmp_path):
    """Chapter 10's benchmark records: a new record in the folder is a new input."""
    package = tmp_path / "bnref"
    _write(package / "__init__.py", "")
    results = tmp_path / "results"
    chapter = "```{code-cell} ipython3\nimport math\n```\n"
    missing = ei.inputs_hash(chapter, package, [results])
    _write(results / "a.json", "{}")
    one = ei.inputs_hash(chapter, package, [results])
    _write(results / "b.json", "{}")
    assert len({missing, one, ei.inputs_hash(chapter, package, [results])}) == 3
    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    assert config["sphinx"]["config"]["execution_inputs_per_doc"] == {
        "book/ch10_gpu": ["benchmarks/results"]}
