"""Outputs that appear under their final name only when complete (temporary file + rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from .errors import InputError, OutputExistsError


def check_output(path: str | os.PathLike[str], force: bool) -> Path:
    """``path`` as an output: refused when it is a folder or another non-file, or exists without ``force``."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give the output a file name")
    if p.exists() and not p.is_file():
        raise InputError(f"{p}: exists and is not a regular file")
    if p.exists() and not force:
        raise OutputExistsError(f"{p}: already exists (use --force to overwrite)")
    return p


def output_mode() -> int:
    """The permission bits a new output gets: 0666 less the umask (``mkstemp`` makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class AtomicFile:
    """A temporary file beside ``path``; ``close(ok=True)`` renames it over ``path``, else deletes it.

    An existing ``path`` is refused unless ``force`` (checked at creation and again at rename time).
    """

    def __init__(self, path: str | os.PathLike[str], force: bool = False) -> None:
        self.path = check_output(path, force)
        self.force = force
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"{parent}: output folder does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.chmod(tmp, output_mode())
        self.tmp = Path(tmp)
        self._f: BinaryIO | None = None
        self.closed = False

    def open(self) -> BinaryIO:
        self._f = self.tmp.open("wb")
        return self._f

    def close(self, ok: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._f is not None:
                if ok:
                    self._f.flush()
                    os.fsync(self._f.fileno())
                self._f.close()
            if ok:
                if self.path.exists() and not self.force:
                    raise OutputExistsError(f"{self.path}: appeared while writing (use --force to overwrite)")
                os.replace(self.tmp, self.path)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()

    def __enter__(self) -> BinaryIO:
        return self.open()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(ok=exc_type is None)
