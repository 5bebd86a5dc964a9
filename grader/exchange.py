"""Collecting and grading that never follow what a student planted.

A student decides what lands in the exchange's inbound folder. nbgrader's
collect copies a submission with ``shutil.copytree``, which follows symbolic
links: a link to ``solutions/`` or to ``gradebook.db`` would arrive in
``submitted/`` as a copy of the file it points to, and autograde would then
copy it on into the folder the student's code runs in. (A link named like the
notebook and pointing at the source notebook would even be graded in its
place.)

- :class:`SafeCollect` (``c.ExchangeFactory.collect``) copies regular files
  and folders only, opened without following links; it refuses, with a message
  naming the student and the path, a symbolic link, FIFO, socket or device, a
  file over ``CourseDirectory.max_file_size`` kilobytes and an inbound entry
  that is itself a link. What it refuses is left where it was, and every other
  student is collected as usual.
- :class:`RefuseLinks`, first of ``Autograde.sanitize_preprocessors``, stops the
  grading of a submission folder that holds a link or a special file however
  it got there (copied by hand, or collected by another tool), before any
  kernel starts; nbgrader reports that submission as failed and grades the
  others.
"""

import errno
import os
import stat

from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.exchange.default.collect import ExchangeCollect


def _kind(mode):
    for test, name in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def planted(root):
    """Every path under ``root`` (itself included) that is neither a regular file nor a real folder."""
    found = []
    mode = os.lstat(root).st_mode
    if not stat.S_ISDIR(mode):
        return [(root, _kind(mode))] if not stat.S_ISREG(mode) else []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                found.append((path, _kind(mode)))
    return found


def _copy_regular(src, dest):
    """Copy one regular file, refusing a link swapped in after the check (O_NOFOLLOW, fstat)."""
    fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", src)
        with os.fdopen(fd, "rb") as source, open(dest, "wb") as target:
            fd = None
            while chunk := source.read(1 << 20):
                target.write(chunk)
    finally:
        if fd is not None:
            os.close(fd)


class SafeCollect(ExchangeCollect):
    """nbgrader's collect, copying regular files only (see the module docstring)."""

    def do_copy(self, src, dest, log=None):
        if os.path.islink(src) or not os.path.isdir(src):
            self.log.error("Refusing submission %s: it is a %s, not a folder", src,
                           _kind(os.lstat(src).st_mode) if os.path.lexists(src) else "missing path")
            return
        if self.get_size(src) > 1000 * self.coursedir.max_dir_size:
            raise RuntimeError(f"Submission {src} is larger than CourseDirectory.max_dir_size "
                               f"({self.coursedir.max_dir_size} kB)")
        from nbgrader.utils import ignore_patterns

        ignored = ignore_patterns(exclude=self.coursedir.ignore, include=self.coursedir.include)
        limit = 1000 * self.coursedir.max_file_size
        for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
            target_dir = os.path.join(dest, os.path.relpath(dirpath, src))
            os.makedirs(target_dir, exist_ok=True)
            skip = set(ignored(dirpath, dirnames + filenames))
            dirnames[:] = [d for d in dirnames if d not in skip and self._allowed(dirpath, d, limit)]
            for name in filenames:
                if name not in skip and self._allowed(dirpath, name, limit):
                    _copy_regular(os.path.join(dirpath, name), os.path.join(target_dir, name))
        if self.coursedir.groupshared:
            for dirpath, _, filenames in os.walk(dest):
                os.chmod(dirpath, (os.stat(dirpath).st_mode | 0o2770) & 0o2777)
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    os.chmod(path, (os.stat(path).st_mode | 0o660) & 0o777)

    def _allowed(self, dirpath, name, limit):
        path = os.path.join(dirpath, name)
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            return True
        if not stat.S_ISREG(st.st_mode):
            self.log.error("Not collected: %s is a %s (only regular files are collected)",
                           path, _kind(st.st_mode))
            return False
        if limit and st.st_size > limit:
            self.log.error("Not collected: %s is %d bytes, over CourseDirectory.max_file_size "
                           "(%d kB)", path, st.st_size, self.coursedir.max_file_size)
            return False
        return True


class RefuseLinks(NbGraderPreprocessor):
    """Stop grading a submission folder that holds a link or a special file."""

    def preprocess(self, nb, resources):
        folder = resources.get("metadata", {}).get("path")
        if folder:
            notebook = os.path.join(folder, resources.get("unique_key", "") + ".ipynb")
            found = planted(folder) + (planted(notebook) if os.path.lexists(notebook) else [])
            if found:
                listed = ", ".join(f"{path} ({kind})" for path, kind in found[:5])
                student = resources.get("nbgrader", {}).get("student", "?")
                raise ValueError(f"not graded: the submission of {student} holds what only a "
                                 f"regular file or folder may be: {listed}. Inspect it by hand.")
        return nb, resources
