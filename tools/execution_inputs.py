"""Sphinx extension: a chapter re-executes when the code it imports changes.

myst-nb's execution cache (jupyter-cache) keys a notebook on its own code
cells, so a change to ``bnref`` alone would leave every chapter's cached
outputs in place, and Sphinx would not even re-read the chapter. This
extension makes the chapter's inputs part of both keys:

* at ``source-read`` it appends one hidden code cell (a comment, tagged
  ``remove-cell``) to each MyST notebook. Its text carries a hash of the
  ``bnref`` modules the chapter imports (followed through ``bnref``'s own
  imports) and of the pinned requirements. jupyter-cache hashes every code
  cell, so a changed input means a cache miss and a fresh execution, while
  an unchanged chapter keeps its cached outputs. Appending at the end keeps
  the chapter's line numbers in warnings;
* at ``env-get-outdated`` it hands Sphinx every chapter whose hash differs
  from the one it was last read with, so the chapter is read, and executed,
  again.

A chapter that imports nothing from ``bnref`` still keys on the pinned
requirements. Configuration (``sphinx: config:`` in ``_config.yml``):

``execution_inputs_package``
    folder of the package, relative to the book's root (default ``"bnref"``).
``execution_inputs_files``
    further files every chapter depends on (default: ``requirements.txt``
    and ``requirements.lock``); a missing file counts as empty, a folder
    counts with every file below it.
``execution_inputs_per_doc``
    data one chapter reads, as ``{docname: [path, ...]}`` (for example the
    benchmark records a chapter plots).
"""

import ast
import hashlib
import pathlib
import re

_FENCE = re.compile(r"^(`{3,}|~{3,})\{code-cell\}[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)
_OPTION_LINE = re.compile(r"^:")
MARKER = "# execution inputs:"


def code_cells(text):
    """The sources of the ``{code-cell}`` blocks of a MyST notebook."""
    return [match.group(2) for match in _FENCE.finditer(text)]


def is_notebook(text):
    """A MyST notebook is Markdown whose front matter names a kernel."""
    if not text.startswith("---"):
        return False
    end = text.find("\n---", 3)
    return end > 0 and "kernelspec" in text[:end]


def _strip_options(lines):
    """Drop a code cell's leading options (``:key: value`` lines or a ``---`` block)."""
    if lines and lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), 0)
        return lines[end + 1:]
    index = 0
    while index < len(lines) and _OPTION_LINE.match(lines[index]):
        index += 1
    return lines[index:]


def imported_modules(source, package):
    """Absolute module names under ``package`` imported anywhere in ``source``.

    IPython magics and shell lines are dropped before parsing; a cell that
    still does not parse falls back to a line scan.
    """
    lines = _strip_options(source.splitlines())
    lines = [line for line in lines if not line.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        pattern = re.compile(rf"^\s*(?:from|import)\s+({package}(?:\.\w+)*)", re.M)
        return set(pattern.findall(source))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name == package or name.startswith(package + ".")}


def module_file(root, name):
    """The file of module ``name`` below ``root`` (the package's parent), or None."""
    path = root.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _relative_imports(source, name, is_package):
    """Modules named by relative imports in module ``name``'s source."""
    parts = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = parts[: len(parts) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def dependency_files(modules, package_dir):
    """Every file of the package that importing ``modules`` executes, sorted.

    Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too;
    each file's own imports of the package are followed.
    """
    package_dir = pathlib.Path(package_dir)
    root, package = package_dir.parent, package_dir.name
    seen, files, pending = set(), set(), list(modules)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        path = module_file(root, name)
        if path is None:  # a name imported from a module, not a module
            continue
        files.add(path)
        source = path.read_text(encoding="utf-8")
        pending.extend(imported_modules(source, package))
        pending.extend(_relative_imports(source, name, path.name == "__init__.py"))
    return sorted(files)


def inputs_hash(text, package_dir, extra_files):
    """Hash of the package files a notebook's code imports and of ``extra_files``."""
    package = pathlib.Path(package_dir).name
    modules = set()
    for cell in code_cells(text):
        modules |= imported_modules(cell, package)
    digest = hashlib.sha256()
    base = pathlib.Path(package_dir).parent
    for path in dependency_files(modules, package_dir):
        digest.update(str(path.relative_to(base)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    for path in map(pathlib.Path, extra_files):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(path.parent)).encode() + b"\0")
            digest.update((file.read_bytes() if file.is_file() else b"") + b"\0")
    return digest.hexdigest()[:16]


def key_cell(digest):
    """The hidden cell appended to a chapter (its text is what the cache hashes)."""
    return (f"\n\n```{{code-cell}} ipython3\n:tags: [remove-cell]\n\n"
            f"{MARKER} {digest}\n```\n")


def _doc_hash(app, docname, text=None):
    if text is None:
        text = pathlib.Path(app.env.doc2path(docname)).read_text(encoding="utf-8")
    confdir = pathlib.Path(app.confdir)
    names = (list(app.config.execution_inputs_files)
             + list(app.config.execution_inputs_per_doc.get(docname, [])))
    return inputs_hash(text, confdir / app.config.execution_inputs_package,
                       [confdir / name for name in names])


def on_source_read(app, docname, source):
    if not is_notebook(source[0]):
        return
    digest = _doc_hash(app, docname, source[0])
    app.env.execution_inputs = getattr(app.env, "execution_inputs", {})
    app.env.execution_inputs[docname] = digest
    source[0] = source[0].rstrip("\n") + key_cell(digest)


def on_env_get_outdated(app, env, added, changed, removed):
    known = getattr(env, "execution_inputs", {})
    stale = []
    for docname, digest in known.items():
        if docname in added | changed | removed:
            continue
        try:
            if _doc_hash(app, docname) != digest:
                stale.append(docname)
        except OSError:  # the source vanished: Sphinx reports it as removed
            continue
    return stale


def on_env_purge_doc(app, env, docname):
    getattr(env, "execution_inputs", {}).pop(docname, None)


def setup(app):
    app.add_config_value("execution_inputs_package", "bnref", "env")
    app.add_config_value("execution_inputs_files",
                         ["requirements.txt", "requirements.lock"], "env")
    app.add_config_value("execution_inputs_per_doc", {}, "env")
    app.connect("source-read", on_source_read)
    app.connect("env-get-outdated", on_env_get_outdated)
    app.connect("env-purge-doc", on_env_purge_doc)
    return {"version": "1", "parallel_read_safe": False, "parallel_write_safe": True}
