"""Labels tables and file-name patterns: the metadata an adapter joins to what it reads.

A labels table (CSV, TSV or Parquet) has one row per key in its ``key`` column: a file for
``image_folder`` (a path relative to the table's folder, a path as listed, a file name or a
stem), a record id for ``dna_fasta``. A ``label_from_filename`` pattern is a regular
expression whose named groups become columns.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scicontrast.data_adapters.images.listing import ImageFiles, shared
from scicontrast.errors import ConfigError, InputDataError


def read_table(path: str | Path, key: str) -> pd.DataFrame:
    """A CSV/TSV/Parquet table with unique, present values in column ``key``."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: labels table not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype={key: str})
        elif suffix in (".tsv", ".tab", ".txt"):
            frame = pd.read_csv(path, sep="\t", dtype={key: str})
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise ConfigError(f"{path}: labels table must be .csv, .tsv/.tab/.txt or .parquet/.pq")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path}: cannot read labels table: {exc}") from None
    if key not in frame.columns:
        raise InputDataError(
            f"{path}: no column {key!r} (labels_key); columns: {list(frame.columns)}"
        )
    keys = frame[key]
    if keys.isna().any():
        row = int(np.flatnonzero(keys.isna().to_numpy())[0]) + 1
        raise InputDataError(f"{path}: row {row} has no {key!r} (rows counted from 1)")
    keys = keys.astype(str)
    duplicated = keys.duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        first = int(np.flatnonzero((keys == keys.iloc[row]).to_numpy())[0])
        raise InputDataError(
            f"{path}: row {row + 1}: duplicate {key} {keys.iloc[row]!r} "
            f"(first in row {first + 1}; rows counted from 1 after the header)"
        )
    return frame.assign(**{key: keys})


def match_table_to_files(
    table: pd.DataFrame, key: str, files: ImageFiles, table_path: Path
) -> tuple[np.ndarray, list[str]]:
    """Which table row describes which file.

    A key names a file when it is, in this order of preference, the file's path relative to
    the table's folder, its path as listed, its name, or its stem (name and stem only when
    unique among the files). Each rule is one Arrow hash lookup of the keys still unmatched
    in the files' strings (``pc.index_in``), not a dict or a ``Path`` per file. Returns
    ``(int64 [n_files] table row of each file, -1 for none; keys matching no file)``.
    Two rows naming one file is an error naming both rows (counted from 1) and the file.
    """
    values = pa.array(table[key].to_numpy(dtype=object), type=pa.large_string())
    # (the files' side, the keys' side, only files whose key no other file shares?), each
    # made only while some key is unmatched.
    rules = (
        (
            lambda: _resolved(files.strings, Path()),
            lambda v: _resolved(v, table_path.parent),
            False,
        ),
        (lambda: files.strings, _as_posix, False),
        (files.names, None, True),
        (files.stems, None, True),
    )
    file_of_row = np.full(len(values), -1, dtype=np.int64)
    for file_side, convert, must_be_unique in rules:
        todo = np.flatnonzero(file_of_row < 0)
        if not len(todo):
            break
        file_keys = file_side()
        keys = values.take(pa.array(todo))
        found = pc.index_in(keys if convert is None else convert(keys), value_set=file_keys)
        found = found.fill_null(-1).to_numpy().astype(np.int64)
        if must_be_unique:  # a name or stem that several files share names none
            hit = found >= 0
            found[hit] = np.where(shared(file_keys)[found[hit]], -1, found[hit])
        file_of_row[todo] = found
    matched = np.flatnonzero(file_of_row >= 0)
    repeated = pd.Series(file_of_row[matched]).duplicated().to_numpy()
    if repeated.any():
        second = matched[int(np.argmax(repeated))]
        first = matched[int(np.argmax(file_of_row[matched] == file_of_row[second]))]
        raise InputDataError(
            f"{table_path}: rows {first + 1} and {second + 1} both name file "
            f"{files[int(file_of_row[second])]}"
        )
    row_of_file = np.full(len(files), -1, dtype=np.int64)
    row_of_file[file_of_row[matched]] = matched
    return row_of_file, values.filter(pa.array(file_of_row < 0)).to_pylist()


def _resolved(paths: pa.Array, base: Path) -> pa.Array:
    """``(base / path).resolve()`` of each path whose name is not a link: each distinct
    folder is resolved once (``os.path.realpath``), and the name joined to it."""
    folders = pc.replace_substring_regex(paths, pattern=r"[^/]*$", replacement="")
    names = pc.replace_substring_regex(paths, pattern=r"^.*/", replacement="")
    distinct = pc.unique(folders)
    real = [os.path.realpath(os.path.join(base, f or ".")) for f in distinct.to_pylist()]
    where = pc.index_in(folders, value_set=distinct)
    return pc.binary_join_element_wise(
        pa.array(real, type=pa.large_string()).take(where), names, pa.scalar("/", pa.large_string())
    )


def _as_posix(paths: pa.Array) -> pa.Array:
    """``Path(p).as_posix()`` of each path (``./`` and repeated or trailing ``/`` dropped)."""
    return pa.array([Path(p).as_posix() for p in paths.to_pylist()], type=pa.large_string())


def compile_filename_pattern(
    pattern: str | None, adapter: str, reserved: tuple[str, ...]
) -> re.Pattern | None:
    """Compile ``label_from_filename``: a regex with named groups, none a reserved column."""
    if pattern is None:
        return None
    where = f"adapter {adapter}: params.label_from_filename"
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None
    if not compiled.groupindex:
        raise ConfigError(f"{where}: {pattern!r} has no named group; write e.g. (?P<label>...)")
    clashes = sorted(set(compiled.groupindex) & set(reserved))
    if clashes:
        raise ConfigError(f"{where}: group names {clashes} are reserved column names")
    return compiled


def filename_groups(pattern: re.Pattern | None, path: Path) -> dict[str, str]:
    """The named groups of ``pattern`` searched in ``path`` (an error when it does not match)."""
    if pattern is None:
        return {}
    match = pattern.search(path.as_posix())
    if match is None:
        raise InputDataError(
            f"{path}: file name does not match label_from_filename {pattern.pattern!r}"
        )
    return match.groupdict()
