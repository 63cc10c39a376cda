"""Atomic writes: a reader never sees a half-written result, and a failed step leaves nothing.

Every output is first written to a temporary sibling and then moved into place with
``os.replace``, which is atomic on POSIX file systems when source and target share a folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` only on success.

    Works for files and folders alike: whatever the caller creates at the yielded path
    replaces ``target`` (an existing folder at ``target`` is removed first).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp = tmp_dir / target.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written for {target}")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


class AtomicFolderWriter:
    """A folder written piece by piece inside a ``with`` block, moved into place at its end.

    Subclasses write into :attr:`folder_being_written` and define ``_finish`` (the last
    writes; it may raise to refuse the folder) and ``_close`` (release open files). On a
    clean exit the folder is finished, closed and moved onto its target; on an error, in the
    block or in ``_finish``, it is closed and removed, and the target is left as it was.
    """

    def __init__(self, target: str | os.PathLike) -> None:
        self._atomic = atomic_path(target)
        self._tmp: Path | None = None

    @property
    def folder_being_written(self) -> Path:
        if self._tmp is None:
            raise RuntimeError(f"{type(self).__name__} writes inside a with block")
        return self._tmp

    def __enter__(self) -> Self:
        self._tmp = self._atomic.__enter__()
        self._tmp.mkdir()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            try:
                self._finish()
            except BaseException as exc:
                self._close()
                self._atomic.__exit__(type(exc), exc, exc.__traceback__)
                raise
        self._close()
        # Moves the folder into place, or (with an error) removes it.
        self._atomic.__exit__(kind, error, traceback)

    def _finish(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_parquet(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as Parquet (pyarrow), atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars and arrays into plain Python for JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
