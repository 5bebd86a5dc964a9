"""Static checks of the book's sources: TOC, notebooks, citations, bnref reuse.

These run without building the book. The TOC checked is the repository's
_toc.yml, or the one named by BNREF_BOOK_TOC.
"""

import ast
import json
import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
TOC = Path(os.environ.get("BNREF_BOOK_TOC", ROOT / "_toc.yml"))
BIB = BOOK / "references.bib"

# {cite}`a`, {cite:p}`a,b`, {cite:t}`a`, {cite:ps}`a; b` ...
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
BIB_ENTRY = re.compile(r"^@(\w+)\s*\{\s*([^,\s]+)\s*,", re.M)
# A MyST code cell: an opening fence of 3+ backticks with {code-cell}, up to the same fence.
CODE_CELL = re.compile(r"^(`{3,})\{code-cell\}[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)
BIBLIOGRAPHY_DIRECTIVE = re.compile(r"^(`{3,}|:{3,})\{bibliography\}", re.M)


def _toc_files(node):
    """Every `file:` entry of a jupyter-book TOC, depth first."""
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        if "root" in node:
            yield node["root"]
        for value in node.values():
            if isinstance(value, (list, dict)):
                yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def _toc():
    return list(_toc_files(yaml.safe_load(TOC.read_text(encoding="utf-8"))))


def _source(entry):
    """The existing source file for a TOC entry (given without its extension), or None."""
    for suffix in ("", ".md", ".ipynb", ".rst"):
        path = ROOT / (entry + suffix)
        if path.is_file():
            return path
    return None


def _chapter_markdown():
    """The book's top-level pages, book/*.md."""
    return sorted(BOOK.glob("*.md"))


def _all_markdown():
    """Every Markdown page under book/, subfolders included."""
    return sorted(p for p in BOOK.rglob("*.md") if ".ipynb_checkpoints" not in p.parts)


def _bib_keys():
    return [key for _, key in BIB_ENTRY.findall(BIB.read_text(encoding="utf-8"))]


def test_toc_files_exist():
    """Every file the TOC lists exists (with .md, .ipynb or .rst)."""
    missing = [entry for entry in _toc() if _source(entry) is None]
    assert not missing, f"{TOC.name} lists files that do not exist: {missing}"


def test_every_book_page_is_in_the_toc():
    """Every book/*.md is in the TOC (only TOC files are built, so a page left out silently vanishes)."""
    listed = {_source(entry) for entry in _toc()}
    left_out = [p.relative_to(ROOT).as_posix() for p in _chapter_markdown() if p not in listed]
    assert not left_out, f"book pages missing from {TOC.name}: {left_out}"


def test_markdown_chapters_are_myst_notebooks():
    """A page with code cells declares the jupytext/kernelspec front matter, so it is executed."""
    bad = []
    for path in _all_markdown():
        text = path.read_text(encoding="utf-8")
        if CODE_CELL.search(text):
            front = text.split("---", 2)[1] if text.startswith("---") else ""
            if "kernelspec" not in front or "jupytext" not in front:
                bad.append(path.relative_to(BOOK).as_posix())
    assert not bad, f"pages with code cells but no notebook front matter: {bad}"


def test_committed_notebooks_have_no_outputs():
    """Any .ipynb under book/ is stored without outputs or execution counts."""
    dirty = []
    for path in sorted(BOOK.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        nb = json.loads(path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb.get("cells", [])):
            if cell.get("cell_type") == "code" and (cell.get("outputs") or cell.get("execution_count")):
                dirty.append(f"{path.relative_to(ROOT)} cell {i}")
    assert not dirty, f"notebooks with stored outputs (clear them before committing): {dirty}"


def test_bibliography_keys_are_unique():
    """No key appears twice in references.bib (helpers append to it concurrently)."""
    keys = _bib_keys()
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert keys, f"no entries parsed from {BIB}"
    assert not duplicates, f"duplicate keys in {BIB.name}: {duplicates}"


def test_every_citation_key_exists():
    """Every {cite} key used in book/*.md is defined in references.bib."""
    known = set(_bib_keys())
    unknown = {}
    for path in _all_markdown():
        for group in CITE.findall(path.read_text(encoding="utf-8")):
            for key in re.split(r"[,;]", group):
                if key.strip() and key.strip() not in known:
                    unknown.setdefault(path.relative_to(BOOK).as_posix(), []).append(key.strip())
    assert not unknown, f"citation keys not in {BIB.name}: {unknown}"


def test_one_global_bibliography_page():
    """Only book/bibliography.md carries a {bibliography} directive (one global list)."""
    with_directive = [p.relative_to(BOOK).as_posix() for p in _all_markdown()
                      if BIBLIOGRAPHY_DIRECTIVE.search(p.read_text(encoding="utf-8"))]
    assert with_directive == ["bibliography.md"], (
        f"{{bibliography}} must appear in bibliography.md only, found in {with_directive}")


def _bnref_public_functions():
    """Module-level public function and class names defined anywhere in bnref/."""
    names = {}
    for path in sorted((ROOT / "bnref").glob("[!_]*.py")):  # _private modules do not export
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                    and not node.name.startswith("_"):
                names.setdefault(node.name, f"bnref.{path.stem}")
    return names


def _cell_python(body):
    """A code cell's Python: without its `:option:` header lines and IPython magics."""
    lines = body.splitlines()
    while lines and (lines[0].startswith(":") or not lines[0].strip()):
        lines.pop(0)
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


def test_chapters_do_not_redefine_bnref():
    """No code cell defines, at top level, a function or class that bnref already provides."""
    public = _bnref_public_functions()
    assert "batchnorm_forward" in public, "bnref's public names could not be collected"
    clashes = []
    for path in _all_markdown():
        for match in CODE_CELL.finditer(path.read_text(encoding="utf-8")):
            try:
                tree = ast.parse(_cell_python(match.group(2)))
            except SyntaxError as exc:
                pytest.fail(f"{path.relative_to(BOOK).as_posix()}: a code cell does not parse as Python: {exc}")
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                        and node.name in public:
                    clashes.append(f"{path.relative_to(BOOK).as_posix()}: {node.name} (use {public[node.name]}.{node.name})")
    assert not clashes, f"chapters re-implement bnref: {clashes}"
