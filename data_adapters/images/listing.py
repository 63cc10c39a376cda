"""The image files of an adapter's ``paths``, held as one Arrow string array.

A folder of a million images is a million paths. As ``pathlib.Path`` objects they cost
about 300 bytes each (300 MiB, held for the whole ``prepare``); as one Arrow
``large_string`` array, the path's UTF-8 bytes plus an 8-byte offset (about 70 MiB for
``/data/run_7/images/img_0000001.png``). :class:`ImageFiles` is a read-only sequence of
``Path``: a ``Path`` is made for one file when it is asked for, and name, stem and
duplicate questions are answered over the whole array by Arrow compute kernels.

Each path is held as ``str(Path(p))`` (so string equality is ``Path`` equality on POSIX).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scicontrast.errors import InputDataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

_GLOB_CHARS = re.compile(r"[*?\[]")

# Paths turned into Path objects at a time while iterating (bounded, not one per file held).
_ITER_ROWS = 65_536


class ImageFiles(Sequence[Path]):
    """Image file paths in order, without repeats: ``len``, indexing and iteration give
    ``Path``; :attr:`strings` is the Arrow array itself."""

    def __init__(self, strings: pa.Array) -> None:
        self.strings = strings.cast(pa.large_string())

    @classmethod
    def of(cls, paths: Iterable[str | Path]) -> ImageFiles:
        """The paths as given (normalised as ``Path`` normalises them)."""
        return cls(_to_arrow([str(Path(p)) for p in paths], "the image paths"))

    def __len__(self) -> int:
        return len(self.strings)

    @overload
    def __getitem__(self, index: int) -> Path: ...
    @overload
    def __getitem__(self, index: slice) -> ImageFiles: ...
    def __getitem__(self, index: int | slice) -> Path | ImageFiles:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            return ImageFiles(self.strings.take(pa.array(range(start, stop, step), pa.int64())))
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return Path(self.strings[index].as_py())

    def __iter__(self) -> Iterator[Path]:
        for start in range(0, len(self), _ITER_ROWS):
            for path in self.strings.slice(start, _ITER_ROWS).to_pylist():
                yield Path(path)

    def names(self) -> pa.Array:
        """Each file's ``Path.name`` (the path after its last ``/``)."""
        return pc.replace_substring_regex(self.strings, pattern=r"^.*/", replacement="")

    def stems(self) -> pa.Array:
        """Each file's ``Path.stem``: its name less the last ``.suffix`` (a leading dot, as
        in ``.png``, starts no suffix)."""
        return pc.replace_substring_regex(self.names(), pattern=r"^(.+)\.[^.]+$", replacement=r"\1")


def shared(values: pa.Array) -> np.ndarray:
    """``bool [n]``: whether another element equals element ``i``."""
    counts = pc.value_counts(values)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    return pc.is_in(values, value_set=repeated).to_numpy(zero_copy_only=False)


def expand_image_paths(paths: list[str] | str) -> ImageFiles:
    """Files, glob patterns (``**`` allowed) and folders -> the image files, in order.

    A folder stands for the image files directly inside it (sorted); a glob pattern keeps
    its matches that are image files (sorted). A literal file path is returned as given,
    even when it does not exist yet (a workflow may build it). A folder or pattern with no
    image file raises ``InputDataError``. A file listed twice is kept at its first place.
    """
    entries = [paths] if isinstance(paths, str) else [str(p) for p in paths]
    parts: list[pa.Array] = []
    for entry in entries:
        if _GLOB_CHARS.search(entry):
            matches = [
                str(Path(p))
                for p in sorted(glob.glob(entry, recursive=True))
                if is_image_name(os.path.basename(p)) and os.path.isfile(p)
            ]
            if not matches:
                raise InputDataError(f"{entry}: glob pattern matches no image file")
            parts.append(_to_arrow(matches, entry))
        elif os.path.isdir(entry):
            parts.append(_folder_files(entry))
        else:
            parts.append(_to_arrow([str(Path(entry))], entry))
    if len(parts) == 1:  # one folder or pattern lists no file twice
        return ImageFiles(parts[0])
    # Arrow's unique keeps each value's first occurrence, in order.
    return ImageFiles(pc.unique(pa.concat_arrays(parts)))


def _folder_files(folder: str) -> pa.Array:
    """``str(Path(folder) / name)`` of the image files directly in ``folder``, by name.

    ``os.scandir`` answers ``is_file`` from the directory entry's type (a ``stat`` only for
    links), and names sort as the ``Path`` objects of one folder do. The folder is joined
    to the names by Arrow, not as a second Python string per file.
    """
    with os.scandir(folder) as scan:
        names = sorted(e.name for e in scan if is_image_name(e.name) and e.is_file())
    if not names:
        raise InputDataError(f"{folder}: folder holds no image file ({', '.join(IMAGE_SUFFIXES)})")
    prefix = str(Path(folder))
    if prefix == ".":
        return _to_arrow(names, folder)
    joined = pc.binary_join_element_wise(
        pa.scalar(prefix.rstrip("/"), pa.large_string()),
        _to_arrow(names, folder),
        pa.scalar("/", pa.large_string()),
    )
    assert isinstance(joined, pa.Array)  # an array argument gives an array
    return joined


def _to_arrow(paths: list[str], where: str) -> pa.Array:
    try:
        return pa.array(paths, type=pa.large_string())
    except (UnicodeEncodeError, pa.ArrowException) as exc:
        raise InputDataError(f"{where}: a file name that is not valid UTF-8 ({exc})") from None


def is_image_name(name: str) -> bool:
    """Whether ``Path(name).suffix`` is an image suffix (any case)."""
    dot = name.rfind(".")
    return 0 < dot < len(name) - 1 and name[dot:].lower() in IMAGE_SUFFIXES
