"""Binder's environment (binder/) is small, CPU-only, locked, and enough for every chapter.

The oracles: the lock file and pyproject.toml read here, and the imports of
bnref and of the chapters' code cells found with ``ast``, mapped to
distributions through the installed environment's metadata.
"""

import ast
import importlib.metadata
import pathlib
import re
import sys
import tomllib

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from requirement_files import pin, requirements

REPO = pathlib.Path(__file__).resolve().parent.parent
BINDER = REPO / "binder"
# The launch notebooks' setup cell stands in for myst_nb (tools/launch_notebooks.py);
# IPython comes with the Jupyter kernel that runs any notebook (Binder's base image, Colab).
PROVIDED_BY_THE_SETUP_CELL = {"myst_nb", "IPython"}


def _pins(path):
    return {name: pin(req) for name, req in requirements(path).items()}


def test_python_version_is_pinned_and_allowed_by_the_package():
    runtime = (BINDER / "runtime.txt").read_text(encoding="utf-8").strip()
    match = re.fullmatch(r"python-(\d+\.\d+)", runtime)
    assert match, f"runtime.txt must read python-X.Y, got {runtime!r}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert Version(match[1]) in SpecifierSet(project["requires-python"])


def test_binder_pins_are_the_locked_versions_with_cpu_only_torch():
    binder, locked = _pins(BINDER / "requirements.txt"), _pins(REPO / "requirements.lock")
    assert binder["torch"].local == "cpu", "Binder must get the CPU build of torch"
    for name, version in binder.items():
        assert Version(version.public) == locked[name], f"{name}: binder {version}, lock {locked[name]}"
    assert not [n for n in binder if n.startswith(("nvidia-", "cuda-"))]
    text = (BINDER / "requirements.txt").read_text(encoding="utf-8")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text.splitlines()
    for tool in ("jupyter-book", "nbgrader", "pytest", "playwright", "hypothesis"):
        assert tool not in binder, f"{tool} is not needed to run a chapter"


def _imports(source):
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def _chapter_code(path):
    text = path.read_text(encoding="utf-8")
    for cell in re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", text, re.M | re.S):
        lines = cell.splitlines()
        if lines and lines[0] == "---":  # a cell's YAML options block
            lines = lines[lines.index("---", 1) + 1:]
        while lines and lines[0].startswith(":"):  # ':key: value' options
            lines = lines[1:]
        lines = [ln for ln in lines if not re.match(r"^\s*[%!]", ln)]
        yield "\n".join(lines)


def _closure(names):
    """The distributions ``names`` install, following their (non-extra) requirements."""
    env = default_environment()
    seen, pending = set(), list(names)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.distribution(name).requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                pending.append(req.name)
    return seen


def test_binder_installs_every_package_bnref_and_the_chapters_import():
    modules = set()
    for path in (REPO / "bnref").rglob("*.py"):
        modules |= set(_imports(path.read_text(encoding="utf-8")))
    for path in sorted((REPO / "book").glob("ch*.md")):
        for code in _chapter_code(path):
            modules |= set(_imports(code))
    third_party = modules - set(sys.stdlib_module_names) - {"bnref"} - PROVIDED_BY_THE_SETUP_CELL
    assert {"torch", "numpy", "matplotlib", "sklearn", "triton"} <= third_party
    provides = importlib.metadata.packages_distributions()
    installed = _closure(_pins(BINDER / "requirements.txt"))
    for module in sorted(third_party):
        dists = {canonicalize_name(d) for d in provides.get(module, [])}
        assert dists & installed, f"{module} (from {sorted(dists)}) is not in Binder's environment"


def test_post_build_installs_bnref_without_its_dependencies():
    script = (BINDER / "postBuild").read_text(encoding="utf-8")
    assert "pip install --no-cache-dir --no-deps ." in script
    assert (BINDER / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
