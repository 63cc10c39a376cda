"""The FASTA/FASTQ adapter: files cut into fixed-length windows.

Items table (one row per window; payload columns for :class:`DNAViews`)::

    item_id       "{record_id}:{start+1}-{end}" (1-based, inclusive; prefixed with
                  "{file}/" when the record id occurs in more than one file)
    record_id, source_file, start (0-based), end (exclusive; the record's length for a
                  short record padded to one window)
    sequence      flank + window + flank as read (uppercase), clipped at the record's ends
    window_start  offset of the window inside ``sequence``
    left_pad, right_pad
                  padding columns before/after ``sequence``; for every row
                  left_pad + len(sequence) + right_pad == window + 2 * flank
    ...           metadata columns (labels table, file-name groups)
"""

from __future__ import annotations

import glob
import gzip
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from Bio import SeqIO

from scicontrast.data_adapters.base import Adapter, Items
from scicontrast.data_adapters.chunks import CHUNK_ROWS, concat_chunks
from scicontrast.data_adapters.dna.encoding import (
    AMBIGUOUS_POLICIES,
    IS_AMBIGUOUS,
    InvalidBaseError,
    encode_codes,
    window_starts,
)
from scicontrast.data_adapters.dna.files import (
    CODES_ARRAY,
    FORMAT_OF_SUFFIX,
    GLOB_CHARS,
    PAYLOAD_COLUMNS,
    TABLE_COLUMNS,
    LabelState,
    Windows,
    biopython_message,
    file_stem,
    strip_gz,
)
from scicontrast.data_adapters.labels import compile_filename_pattern, filename_groups, read_table
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import ADAPTERS

# A chunk also ends after this many records: a record's windows are held as a handful of
# numpy arrays until the chunk's table is built, about 1 KB a record, so 65,536 reads (one
# window each) took 100 MB more than their table.
RECORDS_PER_CHUNK = 16_384


@ADAPTERS.register("dna_fasta")
class FastaAdapter(Adapter):
    """FASTA/FASTQ files (plain or gzipped) cut into fixed-length windows.

    Args:
        paths: Files or glob patterns (``**`` allowed). Format by extension: ``.fa``,
            ``.fasta``, ``.fna``, ``.fas`` (FASTA), ``.fq``, ``.fastq`` (FASTQ), each
            optionally followed by ``.gz``. A single string is read as one path.
        format: ``"fasta"`` or ``"fastq"`` to force the format of every file (then the
            extension only decides gzip); ``None`` infers it from the extension.
        window: Window length in bases.
        stride: Distance between window starts; ``None`` means ``window`` (no overlap).
            The tail policy is in the module docstring.
        flank: Extra bases stored on each side of a window, so that a pair builder can
            shift the window by up to ``flank``; beyond the record's ends they are padding.
        short_sequences: A record shorter than ``window``: ``"error"`` stops, ``"skip"``
            drops it (counted in the warning and in ``meta["dropped_windows"]``), ``"pad"``
            makes one window of the whole record followed by padding columns.
        ambiguous: Encoding of IUPAC ambiguity codes: ``"uniform"`` over the bases they
            stand for, or ``"zero"``. Stored in ``meta`` for the pair builder.
        max_ambiguous_fraction: Windows with a larger fraction of ambiguous bases (any
            IUPAC code other than A, C, G, T, U) are dropped and counted.
        labels: A CSV (``.csv``), TSV (``.tsv``, ``.tab``, ``.txt``) or Parquet
            (``.parquet``, ``.pq``) table with one row per record; its other columns become
            metadata columns of every window of that record.
        labels_key: The labels table's column holding record ids.
        labels_missing: A record with no row in the labels table: ``"error"`` stops,
            ``"allow"`` leaves its metadata missing (NaN).
        label_from_filename: A regular expression with named groups, searched
            (``re.search``) in each file's path as listed by :meth:`input_files`, so it may
            capture folder names too; each group becomes a metadata column. A file it does
            not match is an error. Example: ``"(?P<source>[^/.]+)\\.fa"``.
        duplicate_ids: A record id that occurs again in the same file: ``"error"`` stops
            (a repeated id usually means a concatenated or mislabelled file), ``"number"``
            renames the n-th occurrence to ``"<id>#<n>"`` (n >= 2) and counts them in
            ``meta["renamed_duplicate_ids"]``.

    New files embedded through a trained model (``scicontrast embed --model``) replace
    ``paths`` and are read without the label parameters, which describe the training files.
    """

    input_param = "paths"
    training_only_params = ("labels", "labels_key", "labels_missing", "label_from_filename")

    def __init__(
        self,
        paths: list[str] | str,
        window: int = 200,
        stride: int | None = None,
        flank: int = 0,
        short_sequences: str = "error",
        ambiguous: str = "uniform",
        max_ambiguous_fraction: float = 0.1,
        labels: str | None = None,
        labels_key: str = "record_id",
        labels_missing: str = "error",
        label_from_filename: str | None = None,
        format: str | None = None,
        duplicate_ids: str = "error",
    ) -> None:
        self.paths = [paths] if isinstance(paths, str) else [str(p) for p in paths]
        self.window = window
        self.stride = window if stride is None else stride
        self.flank = flank
        self.short_sequences = short_sequences
        self.ambiguous = ambiguous
        self.max_ambiguous_fraction = max_ambiguous_fraction
        self.labels = labels
        self.labels_key = labels_key
        self.labels_missing = labels_missing
        self.format = format
        self.duplicate_ids = duplicate_ids
        self._check_params()
        self.filename_pattern = compile_filename_pattern(
            label_from_filename, "dna_fasta", TABLE_COLUMNS
        )

    def _check_params(self) -> None:
        def require(ok: bool, key: str, message: str) -> None:
            if not ok:
                raise ConfigError(f"adapter dna_fasta: params.{key}: {message}")

        require(bool(self.paths), "paths", "give at least one file or glob pattern")
        for key, value, minimum in (
            ("window", self.window, 1),
            ("stride", self.stride, 1),
            ("flank", self.flank, 0),
        ):
            require(
                isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
                key,
                f"must be an integer >= {minimum}, got {value!r}",
            )
        for key, choice, allowed in (
            ("short_sequences", self.short_sequences, ("error", "skip", "pad")),
            ("ambiguous", self.ambiguous, AMBIGUOUS_POLICIES),
            ("labels_missing", self.labels_missing, ("error", "allow")),
            ("format", self.format, (None, "fasta", "fastq")),
            ("duplicate_ids", self.duplicate_ids, ("error", "number")),
        ):
            require(choice in allowed, key, f"must be one of {list(allowed)}, got {choice!r}")
        require(
            isinstance(self.max_ambiguous_fraction, (int, float))
            and 0.0 <= self.max_ambiguous_fraction <= 1.0,
            "max_ambiguous_fraction",
            f"must be a number in [0, 1], got {self.max_ambiguous_fraction!r}",
        )

    def input_files(self) -> list[Path]:
        """The files to read: glob patterns expanded (sorted), literal paths as given.

        A literal path is returned even when it does not exist yet (a workflow may build it);
        a glob pattern that matches no file raises ``InputDataError``.
        """
        files: list[Path] = []
        for pattern in self.paths:
            if GLOB_CHARS.search(pattern):
                matches = [
                    Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if Path(p).is_file()
                ]
                if not matches:
                    raise InputDataError(f"{pattern}: glob pattern matches no file")
                files.extend(matches)
            else:
                files.append(Path(pattern))
        return list(dict.fromkeys(files))

    def _format_of(self, path: Path) -> str:
        name, _ = strip_gz(path)
        if self.format is not None:
            return self.format
        fmt = FORMAT_OF_SUFFIX.get(Path(name).suffix.lower())
        if fmt is None:
            raise ConfigError(
                f"{path}: cannot tell FASTA from FASTQ by the extension (known: "
                f"{', '.join(FORMAT_OF_SUFFIX)}, optionally + .gz); "
                "set adapter params.format to 'fasta' or 'fastq'"
            )
        return fmt

    def read(self) -> Items:
        return concat_chunks(self.read_chunks(CHUNK_ROWS))

    def read_chunks(self, chunk_rows: int) -> Iterator[Items]:
        """Windows in chunks of at least ``chunk_rows`` rows or ``RECORDS_PER_CHUNK`` records
        (whole records), as the files are streamed: only the chunk being filled is in
        memory, plus the record ids when a record id may occur in more than one file (their
        items get a file prefix). A last chunk without rows carries the set's ``meta``,
        known once every record was read."""
        files = self.input_files()
        for path in files:
            if not path.is_file():
                raise InputDataError(f"{path}: file not found")
        formats = {path: self._format_of(path) for path in files}
        filename_metadata = {path: filename_groups(self.filename_pattern, path) for path in files}
        self._renamed_duplicates = 0
        shared = self._shared_record_ids(files, formats)
        labels = self._read_labels() if self.labels is not None else None
        state = LabelState(labels)
        dropped = Counter({"too_ambiguous": 0, "short_record": 0})
        self._renamed_duplicates = 0  # the first pass over the ids counted them too
        n_records, pending_rows, n_rows = 0, 0, 0
        pending: list[Windows] = []
        columns: list[str] = []
        for path in files:
            for record_id, sequence in self._records(path, formats[path]):
                n_records += 1
                state.see(record_id, path)
                kept = self._windows(path, record_id, sequence, dropped)
                if kept is not None and len(kept.starts):
                    pending.append(kept)
                    pending_rows += len(kept.starts)  # a running count: summing is quadratic
                if pending_rows >= chunk_rows or len(pending) >= RECORDS_PER_CHUNK:
                    chunk = self._chunk(pending, files, shared, filename_metadata, labels)
                    columns, n_rows = list(chunk.table.columns), n_rows + len(chunk)
                    pending, pending_rows = [], 0
                    yield chunk
        if pending:
            chunk = self._chunk(pending, files, shared, filename_metadata, labels)
            columns, n_rows = list(chunk.table.columns), n_rows + len(chunk)
            yield chunk
        self._warn_dropped(dropped)
        if not n_rows:
            raise InputDataError(
                f"{', '.join(map(str, files))}: no windows left from {n_records} records "
                f"(dropped: {dict(dropped)}); check window, short_sequences and "
                "max_ambiguous_fraction"
            )
        meta = self._meta(columns, dropped, n_records, files, self._check_labels(state))
        yield Items(table=pd.DataFrame({"item_id": pd.Series([], dtype=object)}), meta=meta)

    def _meta(
        self,
        columns: list[str],
        dropped: Counter,
        n_records: int,
        files: list[Path],
        unmatched: int,
    ) -> dict[str, Any]:
        """The items set's ``meta``, known once every record was read."""
        return {
            "modality": "dna",
            "window": self.window,
            "stride": self.stride,
            "flank": self.flank,
            "ambiguous": self.ambiguous,
            "payload_columns": list(PAYLOAD_COLUMNS),
            "codes_array": CODES_ARRAY,
            "metadata_columns": [c for c in columns if c not in TABLE_COLUMNS],
            "dropped_windows": dict(dropped),
            "records": n_records,
            "source_files": [str(p) for p in files],
            "unmatched_label_rows": unmatched,
            "renamed_duplicate_ids": self._renamed_duplicates,
        }

    def _shared_record_ids(self, files: list[Path], formats: dict[Path, str]) -> set[str]:
        """Record ids that occur in more than one file (a first pass over the ids)."""
        if len(files) < 2:
            return set()
        seen: set[str] = set()
        shared: set[str] = set()
        for path in files:
            ids = {record_id for record_id, _ in self._records(path, formats[path])}
            shared |= ids & seen
            seen |= ids
        return shared

    def _chunk(
        self,
        windows: list[Windows],
        files: list[Path],
        shared: set[str],
        filename_metadata: dict[Path, dict[str, str]],
        labels: pd.DataFrame | None,
    ) -> Items:
        table = self._items_table(windows, shared, files)
        table = self._add_filename_metadata(table, filename_metadata)
        if labels is not None:
            table = table.join(labels, on="record_id")
        return Items(table=table, arrays={CODES_ARRAY: np.concatenate([w.codes for w in windows])})

    # -- reading --------------------------------------------------------------------------

    def _records(self, path: Path, fmt: str) -> Iterator[tuple[str, str]]:
        """``(record_id, uppercase sequence)`` for each record, validated, as read."""
        _, gzipped = strip_gz(path)
        number = 0
        seen: set[str] = set()
        previous = None
        try:
            opener = gzip.open if gzipped else open
            with opener(path, "rt", encoding="utf-8") as handle:
                for record in SeqIO.parse(handle, fmt):
                    record_id = record.id
                    number += 1
                    if not record_id:
                        raise InputDataError(f"{path}: record #{number} has an empty id")
                    if record_id in seen:
                        if self.duplicate_ids == "error":
                            raise InputDataError(
                                f"{path}: record {record_id!r} occurs twice (record #{number});"
                                " set params.duplicate_ids: number to rename repeats"
                            )
                        occurrence = 2
                        while f"{record_id}#{occurrence}" in seen:
                            occurrence += 1
                        record_id = f"{record_id}#{occurrence}"
                        self._renamed_duplicates += 1
                    sequence = str(record.seq)
                    if not sequence:
                        raise InputDataError(f"{path}: record {record_id!r} has no sequence")
                    try:
                        encode_codes(sequence)
                    except InvalidBaseError as exc:
                        raise InputDataError(f"{path}: record {record_id!r}: {exc}") from None
                    seen.add(record_id)
                    previous = record_id
                    yield record_id, sequence.upper()
        except UnicodeDecodeError:
            raise InputDataError(
                f"{path}: not a text {fmt.upper()} file (it holds bytes that are not UTF-8 "
                "text; a gzipped file needs the .gz extension)"
            ) from None
        except ValueError as exc:
            where = "before the first record" if previous is None else f"after {previous!r}"
            raise InputDataError(
                f"{path}: malformed {fmt.upper()} {where}: {biopython_message(exc)}"
            ) from None
        except (OSError, EOFError, zlib.error) as exc:
            raise InputDataError(f"{path}: cannot read ({exc})") from None
        if not number:
            raise InputDataError(f"{path}: no records (an empty {fmt.upper()} file?)")

    def _windows(
        self, path: Path, record_id: str, sequence: str, dropped: Counter
    ) -> Windows | None:
        length = len(sequence)
        if length < self.window:
            if self.short_sequences == "error":
                raise InputDataError(
                    f"{path}: record {record_id!r} has {length} bases, shorter than "
                    f"window={self.window}; set adapter params.short_sequences to 'skip' "
                    "or 'pad'"
                )
            if self.short_sequences == "skip":
                dropped["short_record"] += 1
                return None
            starts = np.zeros(1, dtype=np.int64)
            ends = np.full(1, length, dtype=np.int64)
        else:
            starts = window_starts(length, self.window, self.stride)
            ends = starts + self.window

        codes = encode_codes(sequence)
        ambiguous_before = np.concatenate([[0], np.cumsum(IS_AMBIGUOUS[codes])])
        n_ambiguous = ambiguous_before[ends] - ambiguous_before[starts]
        # a quotient, not frac * length: 29 / 100 rounds to the float 0.29, 0.29 * 100 does not
        keep = n_ambiguous / (ends - starts) <= self.max_ambiguous_fraction
        dropped["too_ambiguous"] += int((~keep).sum())
        starts, ends = starts[keep], ends[keep]

        lows = np.maximum(starts - self.flank, 0)
        highs = np.minimum(ends + self.flank, length)
        left_pads = self.flank - (starts - lows)
        right_pads = self.window + 2 * self.flank - left_pads - (highs - lows)
        # Row r is padded[starts[r] : starts[r] + width] of the record with flank + window
        # padding codes around it: the flanks beyond the record's ends are padding.
        width = self.window + 2 * self.flank
        padded = np.zeros(length + width, dtype=np.uint8)
        padded[self.flank : self.flank + length] = codes
        return Windows(
            path=path,
            record_id=record_id,
            starts=starts,
            ends=ends,
            sequences=[
                sequence[lo:hi] for lo, hi in zip(lows.tolist(), highs.tolist(), strict=True)
            ],
            offsets=starts - lows,
            left_pads=left_pads,
            right_pads=right_pads,
            codes=np.lib.stride_tricks.sliding_window_view(padded, width)[starts],
        )

    def _warn_dropped(self, dropped: Counter) -> None:
        if dropped["too_ambiguous"]:
            warnings.warn(
                f"dna_fasta: dropped {dropped['too_ambiguous']} windows with more than "
                f"{self.max_ambiguous_fraction:.0%} ambiguous bases",
                stacklevel=3,
            )
        if dropped["short_record"]:
            warnings.warn(
                f"dna_fasta: skipped {dropped['short_record']} records shorter than "
                f"window={self.window}",
                stacklevel=3,
            )

    # -- table ----------------------------------------------------------------------------

    def _items_table(
        self, windows: list[Windows], shared_ids: set[str], files: list[Path]
    ) -> pd.DataFrame:
        stems = Counter(file_stem(p) for p in files)
        prefix = {p: file_stem(p) if stems[file_stem(p)] == 1 else str(p) for p in files}
        columns: dict[str, Any] = {name: [] for name in TABLE_COLUMNS}
        for w in windows:
            n = len(w.starts)
            shared = w.record_id in shared_ids
            head = f"{prefix[w.path]}/{w.record_id}" if shared else w.record_id
            columns["item_id"].extend(
                f"{head}:{s + 1}-{e}"
                for s, e in zip(w.starts.tolist(), w.ends.tolist(), strict=True)
            )
            columns["record_id"].extend([w.record_id] * n)
            columns["source_file"].extend([str(w.path)] * n)
            columns["start"].append(w.starts)
            columns["end"].append(w.ends)
            columns["sequence"].extend(w.sequences)
            columns["window_start"].append(w.offsets)
            columns["left_pad"].append(w.left_pads)
            columns["right_pad"].append(w.right_pads)
        for name in ("start", "end", "window_start", "left_pad", "right_pad"):
            columns[name] = np.concatenate(columns[name]).astype(np.int64)
        return pd.DataFrame(columns)

    def _add_filename_metadata(
        self, table: pd.DataFrame, metadata: dict[Path, dict[str, str]]
    ) -> pd.DataFrame:
        if self.filename_pattern is None:
            return table
        by_file = {str(p): groups for p, groups in metadata.items()}
        for group in self.filename_pattern.groupindex:
            table[group] = table["source_file"].map(lambda f, g=group: by_file[f][g])
        return table

    def _read_labels(self) -> pd.DataFrame:
        assert self.labels is not None  # read() calls this only with a labels table
        frame = read_table(self.labels, self.labels_key).set_index(self.labels_key)
        taken = set(TABLE_COLUMNS) | set(
            self.filename_pattern.groupindex if self.filename_pattern else ()
        )
        clashes = sorted(set(map(str, frame.columns)) & taken)
        if clashes:
            raise InputDataError(
                f"{self.labels}: columns {clashes} clash with item-table or label_from_filename "
                "columns; rename them"
            )
        return frame

    def _check_labels(self, state: LabelState) -> int:
        """Warn about label rows naming no record; raise for a record without a row.

        Returns the number of label rows that name no record.
        """
        if state.labels is None:
            return 0
        unmatched = int((~state.labels.index.isin(list(state.matched))).sum())
        if unmatched:
            warnings.warn(
                f"{self.labels}: {unmatched} rows name no record in the input files",
                stacklevel=4,
            )
        if state.missing and self.labels_missing == "error":
            record_id, path = state.first_missing
            raise InputDataError(
                f"{self.labels}: no row for record {record_id!r} "
                f"(file {path}; {len(state.missing)} records in all); "
                "set adapter params.labels_missing to 'allow' to keep them unlabelled"
            )
        return unmatched
