"""Generate the .ipynb twins of the book's chapters that the launch buttons open.

The chapters are MyST Markdown notebooks (``book/*.md``). Colab cannot open a
.md file and Binder opens it as plain text, but the theme's launch buttons
link to ``book/<name>.ipynb`` instead of the .md whenever that file exists.
This tool writes that file for every chapter listed in ``_toc.yml`` that is a
MyST notebook (has a ``kernelspec`` in its front matter): the chapter's cells,
no outputs, preceded by a setup cell that installs ``bnref`` from
``repository.url`` at ``repository.branch`` in ``_config.yml`` when it is
missing (Colab starts without it; Binder's environment, ``binder/``, has it).
The install asks for the extras the chapter needs, ``bnref[book]`` and, for a
chapter that imports ``bnref.triton``, ``bnref[book,gpu]``: lower bounds that
Colab's preinstalled torch and matplotlib already meet, so nothing else is
downloaded there. Sphinx never sees the .ipynb files
(``exclude_patterns`` in ``_config.yml``), so each chapter has one source.

    .venv/bin/python tools/launch_notebooks.py            # write (make notebooks)
    .venv/bin/python tools/launch_notebooks.py --check    # exit 1 when stale

Output is deterministic: cell ids are numbered, metadata is fixed, no
timestamps, so a regenerated file only differs when a chapter changed.
"""

import argparse
import pathlib
import sys

import jupytext
import nbformat
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from grader.course import repository_url  # noqa: E402
from tools.execution_inputs import imported_modules  # noqa: E402

BOOK_DIR = "book"
SETUP_TAG = "launch-setup"
NOTE_TAG = "launch-note"


def toc_files(toc_path):
    """Every ``file:`` entry of a jb-book TOC (root, parts, chapters, sections), in order."""
    toc = yaml.safe_load(pathlib.Path(toc_path).read_text(encoding="utf-8"))
    files = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key) or [])
        elif isinstance(node, list):
            for item in node:
                walk(item)

    if "root" in toc:
        files.append(toc["root"])
    walk(toc)
    return files


def chapter_sources(toc_path, repo=None):
    """The TOC's MyST notebooks under ``book/``, as paths relative to ``repo``."""
    repo = REPO if repo is None else repo
    sources = []
    for entry in toc_files(toc_path):
        rel = pathlib.PurePosixPath(entry)
        if rel.suffix != ".md":
            rel = rel.with_name(rel.name + ".md")
        if rel.parts[0] != BOOK_DIR or not (repo / rel).is_file():
            continue
        if "kernelspec" in jupytext.read(repo / rel).metadata:
            sources.append(rel)
    return sources


def launch_settings(config_path):
    """``(repository.url, repository.branch)`` from the book's ``_config.yml``."""
    config = yaml.safe_load(pathlib.Path(config_path).read_text(encoding="utf-8"))
    branch = (config.get("repository") or {}).get("branch") or "main"
    return repository_url(config_path), str(branch)


def install_extras(chapter):
    """The ``bnref`` extras a chapter's code needs (see ``pyproject.toml``)."""
    modules = set()
    for cell in chapter.cells:
        if cell["cell_type"] == "code":
            modules |= imported_modules(cell["source"], "bnref")
    needs_gpu = any(m == "bnref.triton" or m.startswith("bnref.triton.") for m in modules)
    return ["book", "gpu"] if needs_gpu else ["book"]


def setup_cells(source_rel, url, branch, extras=("book",)):
    """The markdown note and the install cell that open every generated notebook."""
    note = nbformat.v4.new_markdown_cell(
        "**Running this chapter on Colab or Binder.** The next cell installs the "
        "course package `bnref` when it is missing, then asks for inline plots. "
        f"This notebook is generated from `{source_rel}` by "
        "`tools/launch_notebooks.py` (`make notebooks`); edit the chapter, not this file.",
        metadata={"tags": [NOTE_TAG]},
    )
    code = nbformat.v4.new_code_cell(
        "# Colab and Binder start without the course package: install it from the\n"
        "# course repository (repository.url and branch in the book's _config.yml).\n"
        "import importlib\n"
        "import importlib.util\n"
        "import subprocess\n"
        "import sys\n"
        "\n"
        'if importlib.util.find_spec("bnref") is None:\n'
        '    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet",\n'
        f'                           "bnref[{",".join(extras)}] @ git+{url}@{branch}"])\n'
        "    importlib.invalidate_caches()\n"
        "# The book's hidden cells hand numbers to the page with myst_nb.glue;\n"
        "# outside the book build that is a no-op.\n"
        'if importlib.util.find_spec("myst_nb") is None:\n'
        "    import types\n"
        '    sys.modules["myst_nb"] = types.SimpleNamespace(glue=lambda *args, **kwargs: None)\n'
        "%matplotlib inline",
        metadata={"tags": [SETUP_TAG]},
    )
    return [note, code]


def build_notebook(source_rel, url, branch, repo=None):
    """The launch notebook for one chapter, as the exact text to write."""
    repo = REPO if repo is None else repo
    chapter = jupytext.read(repo / source_rel, fmt="md:myst")
    cells = setup_cells(source_rel, url, branch, install_extras(chapter)) + list(chapter.cells)
    for index, cell in enumerate(cells):
        cell["id"] = f"cell-{index:03d}"
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": dict(chapter.metadata["kernelspec"]),
        "language_info": {"name": "python"},
    }
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def expected_notebooks(toc_path, config_path, repo=None):
    """``{path relative to repo: text}`` for every launch notebook the TOC calls for."""
    repo = REPO if repo is None else repo
    url, branch = launch_settings(config_path)
    return {
        str(src.with_suffix(".ipynb")): build_notebook(src, url, branch, repo)
        for src in chapter_sources(toc_path, repo)
    }


def existing_notebooks(repo=None):
    """Every .ipynb under ``book/`` (checkpoints excluded), relative to ``repo``."""
    repo = REPO if repo is None else repo
    return {
        str(path.relative_to(repo))
        for path in (repo / BOOK_DIR).rglob("*.ipynb")
        if ".ipynb_checkpoints" not in path.parts
    }


def is_generated(path):
    """Whether an .ipynb carries this tool's setup cell (so writing may delete it)."""
    try:
        cells = nbformat.read(path, as_version=4).cells
    except Exception:  # not a readable notebook: not ours, leave it alone
        return False
    return any(SETUP_TAG in c.get("metadata", {}).get("tags", []) for c in cells[:2])


def problems(expected, repo=None):
    """Human-readable lines for stale, missing and extra launch notebooks."""
    repo = REPO if repo is None else repo
    lines = []
    for rel, text in sorted(expected.items()):
        path = repo / rel
        if not path.is_file():
            lines.append(f"missing: {rel}")
        elif path.read_text(encoding="utf-8") != text:
            lines.append(f"stale:   {rel}")
    for rel in sorted(existing_notebooks(repo) - set(expected)):
        lines.append(f"extra:   {rel} (not a MyST chapter in the TOC)")
    return lines


def write(expected, repo=None):
    """Write every expected notebook and delete generated ones the TOC no longer lists."""
    repo = REPO if repo is None else repo
    for rel, text in sorted(expected.items()):
        path = repo / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote   {rel}")
    for rel in sorted(existing_notebooks(repo) - set(expected)):
        if is_generated(repo / rel):
            (repo / rel).unlink()
            print(f"removed {rel}")
        else:
            print(f"left    {rel} (not generated by this tool)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a notebook is stale, missing or extra")
    parser.add_argument("--toc", default=REPO / "_toc.yml", type=pathlib.Path)
    parser.add_argument("--config", default=REPO / "_config.yml", type=pathlib.Path)
    args = parser.parse_args(argv)
    expected = expected_notebooks(args.toc, args.config)
    if args.check:
        found = problems(expected)
        if found:
            print("Launch notebooks are out of date; run `make notebooks`:")
            print("\n".join("  " + line for line in found))
            return 1
        print(f"{len(expected)} launch notebooks up to date")
        return 0
    write(expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
