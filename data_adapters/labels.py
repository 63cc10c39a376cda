"""Labels tables and file-name patterns: the metadata an adapter joins to what it reads.

A labels table (CSV, TSV or Parquet) has one row per key in its ``key`` column: a file for
``image_folder`` (a path relative to the table's folder, a path as listed, a file name or a
stem), a record id for ``dna_fasta``. A ``label_from_filename`` pattern is a regular
expression whose named groups become columns.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

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
    table: pd.DataFrame, key: str, files: list[Path], table_path: Path
) -> tuple[dict[Path, int], list[str]]:
    """Which table row describes which file.

    A key names a file when it is, in this order of preference, the file's path relative to
    the table's folder, its path as listed, its name, or its stem (name and stem only when
    unique among the files). Returns ``(row of each matched file, keys matching no file)``.
    """
    resolved = {p.resolve(): p for p in files}
    as_listed = {p.as_posix(): p for p in files}
    names = Counter(p.name for p in files)
    stems = Counter(p.stem for p in files)
    by_name = {p.name: p for p in files if names[p.name] == 1}
    by_stem = {p.stem: p for p in files if stems[p.stem] == 1}
    rows: dict[Path, int] = {}
    unmatched: list[str] = []
    for row, value in enumerate(table[key].tolist()):
        candidate = (table_path.parent / value).resolve()
        path = (
            resolved.get(candidate)
            or as_listed.get(Path(value).as_posix())
            or by_name.get(value)
            or by_stem.get(value)
        )
        if path is None:
            unmatched.append(value)
            continue
        if path in rows:
            raise InputDataError(
                f"{table_path}: rows {rows[path] + 1} and {row + 1} both name file {path}"
            )
        rows[path] = row
    return rows, unmatched


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
