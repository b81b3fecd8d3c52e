"""Outputs that appear under their final name only when complete (temporary file + rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from .errors import InputError, OutputExistsError


class AtomicFile:
    """A temporary file beside ``path``; ``close(ok=True)`` renames it over ``path``, else deletes it.

    An existing ``path`` is refused unless ``force`` (checked at creation and again at rename time).
    """

    def __init__(self, path: str | os.PathLike[str], force: bool = False) -> None:
        self.path = Path(path)
        self.force = force
        if self.path.exists() and not force:
            raise OutputExistsError(f"{self.path}: already exists (use --force to overwrite)")
        if self.path.exists() and not self.path.is_file():
            raise InputError(f"{self.path}: exists and is not a regular file")
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"{parent}: output folder does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
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
