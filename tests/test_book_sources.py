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


# --- Chapters before the algorithm chapter do not use batch normalization ---

ALGORITHM_CHAPTER = "book/ch04_algorithm"
# A code cell may use BN before the algorithm chapter only when it says so:
# its `:tags:` line carries this tag, and the reader is pointed forward.
FORWARD_REFERENCE_TAG = "forward-reference"
BN_NAME = re.compile(r"batch_?norm", re.I)


def _cell_tags(body):
    """The tags in a MyST code cell's `:tags: [...]` header line, or an empty set."""
    for line in body.splitlines():
        if not line.startswith(":"):
            break
        match = re.match(r":tags:\s*\[(.*)\]", line)
        if match:
            return {tag.strip().strip("'\"") for tag in match.group(1).split(",")}
    return set()


def batch_norm_uses(markdown):
    """Where a MyST chapter's code uses batch normalization outside a marked forward reference.

    Counts: importing ``bnref.nn`` (or ``nn`` from ``bnref``), and any name or
    attribute that spells batch norm (``BatchNorm1d``, ``nn.BatchNorm2d``,
    ``F.batch_norm``, ``batchnorm_forward``, ``spatial_batchnorm_forward`` ...),
    whether it is called, constructed or passed on (``norm=nn.BatchNorm1d``).

    Returns:
        ``["cell K, line L: what", ...]``, empty when the chapter is clean.
    """
    uses = []
    for k, match in enumerate(CODE_CELL.finditer(markdown)):
        body = match.group(2)
        if FORWARD_REFERENCE_TAG in _cell_tags(body):
            continue
        tree = ast.parse(_cell_python(body))
        for node in ast.walk(tree):
            what = None
            if isinstance(node, ast.Import):
                what = next((f"import {a.name}" for a in node.names
                             if a.name == "bnref.nn" or a.name.startswith("bnref.nn.")), None)
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if module == "bnref.nn" or module.startswith("bnref.nn."):
                    what = f"from {module} import ..."
                elif module == "bnref" and any(a.name == "nn" for a in node.names):
                    what = "from bnref import nn"
            if what is None:
                name = node.id if isinstance(node, ast.Name) else (
                    node.attr if isinstance(node, ast.Attribute) else None)
                if isinstance(node, ast.alias):
                    name = node.asname or node.name.rsplit(".", 1)[-1]
                if name is not None and BN_NAME.search(name):
                    what = name
            if what is not None:
                uses.append(f"cell {k}, line {getattr(node, 'lineno', '?')}: {what}")
    return uses


def _chapters_before_algorithm():
    toc = _toc()
    assert ALGORITHM_CHAPTER in toc, f"{ALGORITHM_CHAPTER} is not in {TOC.name}: {toc}"
    return [_source(entry) for entry in toc[:toc.index(ALGORITHM_CHAPTER)]
            if _source(entry) is not None and _source(entry).suffix == ".md"]


def test_no_batch_norm_before_the_algorithm_chapter():
    """Chapters before the one that defines BN neither import bnref.nn nor use a BN layer or function."""
    chapters = _chapters_before_algorithm()
    assert any(p.name.startswith("ch01") for p in chapters), f"chapter 1 not found before the algorithm: {chapters}"
    found = {p.relative_to(ROOT).as_posix(): batch_norm_uses(p.read_text(encoding="utf-8")) for p in chapters}
    found = {page: uses for page, uses in found.items() if uses}
    assert not found, (f"batch norm is used before {ALGORITHM_CHAPTER} defines it (remove the use, or tag "
                       f"the cell `{FORWARD_REFERENCE_TAG}` and point the reader forward): {found}")


def _md_cell(code, tags=None):
    header = f":tags: [{', '.join(tags)}]\n\n" if tags else ""
    return f"Some prose.\n\n```{{code-cell}} ipython3\n{header}{code}\n```\n\nMore prose.\n"


@pytest.mark.parametrize("code", [
    "from bnref.nn import BatchNorm1d",
    "import bnref.nn",
    "import bnref.nn as bnn",
    "from bnref import nn as bnn",
    "from bnref.functional import batchnorm_forward",
    "out, cache = bnref.functional.batchnorm_forward(x, g, b, {})",
    "layer = torch.nn.BatchNorm1d(10)",
    "model = make_mlp([4, 8, 2], norm=nn.BatchNorm1d)",
    "y = F.batch_norm(x, None, None, training=True)",
    "y = spatial_batchnorm_forward(x, g, b, {})",
    "%matplotlib inline\nimport numpy as np\nfrom torch import nn\nbn = nn.BatchNorm2d(3)",
])
def test_batch_norm_checker_catches_uses(code):
    """The checker flags every kind of BN use, each on its own, in an unmarked cell."""
    assert batch_norm_uses(_md_cell(code)), f"the checker missed a batch-norm use: {code!r}"
    assert batch_norm_uses(_md_cell(code, tags=["hide-input"])), f"a cell's other tags hid a use: {code!r}"


def test_batch_norm_checker_accepts_clean_cells_and_forward_references():
    """Ordinary code passes, and a BN use passes only in a cell tagged as a forward reference."""
    clean = "import torch\nfrom torch import nn\nmodel = make_mlp([4, 8, 2], norm=None)\nx = nn.LayerNorm(3)"
    assert batch_norm_uses(_md_cell(clean)) == []
    bn = "from bnref.nn import BatchNorm1d\nbn = BatchNorm1d(4)"
    assert batch_norm_uses(_md_cell(bn, tags=[FORWARD_REFERENCE_TAG, "hide-input"])) == []
    assert len(batch_norm_uses(_md_cell(bn))) >= 2, "both the import and the construction should be reported"
    # Prose that names batch norm is not code and is never flagged.
    assert batch_norm_uses("Batch normalization, `BatchNorm1d`, comes in Chapter 4.\n") == []
