"""The .ipynb twins that the Colab/Binder launch buttons open match their chapters.

The oracles are independent of tools/launch_notebooks.py: the TOC is read with
a regular expression, the chapters' front matter with yaml, their code cells
with jupytext directly (cross-checked by counting ``{code-cell}`` fences), and
the install URL is compared with ``_config.yml`` read here.
"""

import json
import pathlib
import re
import shutil
import sys

import jupytext
import pytest
import yaml
from IPython.core.inputtransformer2 import TransformerManager
from sphinx.util.matching import Matcher

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools import launch_notebooks  # noqa: E402

CONFIG = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
INSTALL = re.compile(r'"bnref\[(?P<extras>[a-z,]+)\] @ git\+(?P<url>[^"@]+)@(?P<branch>[^"]+)"')


def front_matter(path):
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    return yaml.safe_load(text[4:text.index("\n---", 4)]) or {}


def toc_chapters():
    """The TOC's MyST notebooks under book/: .md files whose front matter has a kernelspec."""
    toc = (REPO / "_toc.yml").read_text(encoding="utf-8")
    entries = re.findall(r"^\s*(?:-\s*file|root):\s*(\S+)", toc, re.M)
    chapters = []
    for entry in entries:
        path = REPO / (entry if entry.endswith(".md") else entry + ".md")
        if entry.startswith("book/") and path.is_file() and "kernelspec" in front_matter(path):
            chapters.append(path)
    return chapters


CHAPTERS = toc_chapters()


def source_text(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_toc_has_notebook_chapters():
    assert CHAPTERS, "_toc.yml lists no MyST notebook chapter under book/: nothing to launch"


def test_launch_notebooks_are_up_to_date(capsys):
    rc = launch_notebooks.main(["--check"])
    out = capsys.readouterr().out
    assert rc == 0, (
        "The Colab/Binder notebooks book/*.ipynb do not match the chapters; "
        f"run `make notebooks` and commit the result.\n{out}")


def test_one_notebook_per_chapter_and_no_other():
    expected = sorted(str(p.with_suffix(".ipynb").relative_to(REPO)) for p in CHAPTERS)
    found = sorted(str(p.relative_to(REPO)) for p in (REPO / "book").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
    assert found == expected, "run `make notebooks` to add missing and remove extra notebooks"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_notebook_matches_chapter(chapter):
    notebook_path = chapter.with_suffix(".ipynb")
    assert notebook_path.is_file(), f"{notebook_path.name} missing: run `make notebooks`"
    nb = json.loads(notebook_path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, (
            f"{notebook_path.name} has outputs: commit notebooks without them")

    setup, chapter_code = code[0], code[1:]
    assert "launch-setup" in setup["metadata"].get("tags", [])
    assert nb["cells"][0]["cell_type"] == "markdown"  # the note that explains the setup cell

    expected = [source_text(c) for c in jupytext.read(chapter).cells if c.cell_type == "code"]
    fences = len(re.findall(r"^```\{code-cell\}", chapter.read_text(encoding="utf-8"), re.M))
    assert len(expected) == fences
    assert [source_text(c) for c in chapter_code] == expected
    assert nb["metadata"]["kernelspec"] == front_matter(chapter)["kernelspec"]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_setup_cell_installs_from_config_repository(chapter):
    nb = json.loads(chapter.with_suffix(".ipynb").read_text(encoding="utf-8"))
    setup = source_text(next(c for c in nb["cells"] if c["cell_type"] == "code"))
    match = INSTALL.search(setup)
    assert match, f"no `bnref[EXTRAS] @ git+URL@BRANCH` install in the setup cell:\n{setup}"
    # Only bnref and its runtime needs: the book's extra, and Triton where the chapter uses it.
    uses_triton = re.search(r"^\s*(?:import|from) bnref\.triton\b|^\s*from bnref import triton\b",
                            chapter.read_text(encoding="utf-8"), re.M)
    assert match["extras"] == ("book,gpu" if uses_triton else "book")
    assert match["url"] == CONFIG["repository"]["url"].rstrip("/")
    assert match["branch"] == str(CONFIG["repository"].get("branch", "main"))
    assert "%matplotlib inline" in setup
    # The cell must be valid IPython: magics transformed, then Python compiles it.
    compile(TransformerManager().transform_cell(setup), "setup-cell", "exec")


def test_sphinx_never_sees_the_notebooks():
    """One source per chapter: the .ipynb twins are excluded, the .md chapters are not."""
    excluded = Matcher(CONFIG["exclude_patterns"])
    for chapter in CHAPTERS:
        rel = chapter.relative_to(REPO)
        assert excluded(str(rel.with_suffix(".ipynb")))
        assert not excluded(str(rel))
    assert excluded("book/assignments/sub/x.ipynb")


def test_check_reports_stale_missing_and_extra(tmp_path, capsys, monkeypatch):
    """The check itself: an edited chapter, a deleted and a stray notebook are all named."""
    (tmp_path / "book").mkdir()
    chapter = CHAPTERS[0]
    shutil.copy(chapter, tmp_path / "book" / chapter.name)
    toc = tmp_path / "_toc.yml"
    toc.write_text(f"format: jb-book\nroot: book/{chapter.stem}\n")
    config = tmp_path / "_config.yml"
    config.write_text("repository:\n  url: https://example.org/fork/course/\n  branch: dev\n")
    monkeypatch.setattr(launch_notebooks, "REPO", tmp_path)

    def check():
        expected = launch_notebooks.expected_notebooks(toc, config, tmp_path)
        return launch_notebooks.problems(expected, tmp_path)

    assert check() == [f"missing: book/{chapter.stem}.ipynb"]
    launch_notebooks.main(["--toc", str(toc), "--config", str(config)])
    assert check() == []
    written = (tmp_path / "book" / f"{chapter.stem}.ipynb").read_text(encoding="utf-8")
    assert "bnref[book] @ git+https://example.org/fork/course@dev" in written

    md = tmp_path / "book" / chapter.name
    new_cell = "\n```{code-cell} ipython3\nprint('new cell')\n```\n"
    md.write_text(md.read_text(encoding="utf-8") + new_cell, encoding="utf-8")
    (tmp_path / "book" / "stray.ipynb").write_text("{}")
    assert check() == [f"stale:   book/{chapter.stem}.ipynb",
                       "extra:   book/stray.ipynb (not a MyST chapter in the TOC)"]
    assert launch_notebooks.main(["--check", "--toc", str(toc), "--config", str(config)]) == 1
    assert "make notebooks" in capsys.readouterr().out


def test_setup_cell_stands_in_for_glue_where_myst_nb_is_missing():
    """Colab and Binder lack myst_nb, yet the chapters' hidden cells call
    ``myst_nb.glue``: after the setup cell that import must work and do nothing."""
    import subprocess

    nb = json.loads(CHAPTERS[0].with_suffix(".ipynb").read_text(encoding="utf-8"))
    setup = source_text(next(c for c in nb["cells"] if c["cell_type"] == "code"))
    setup = setup.replace("%matplotlib inline", "")
    hide_myst_nb = (
        "import importlib.util, sys\n"
        "_find_spec = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'myst_nb' else _find_spec(n, *a)\n"
        "sys.modules['myst_nb'] = None  # a real import now raises ImportError\n"
        "try:\n    import myst_nb\nexcept ImportError:\n    del sys.modules['myst_nb']\n"
        "else:\n    raise SystemExit('myst_nb was not hidden')\n"
    )
    check = "\nfrom myst_nb import glue\nassert glue('key', 1.0, display=False) is None\nprint('glue stub ok')\n"
    result = subprocess.run([sys.executable, "-c", hide_myst_nb + setup + check],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "glue stub ok" in result.stdout, result.stderr
