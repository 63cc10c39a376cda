"""Amplicon tables: one sequenced amplicon per row of a tab-separated file.

Input: TSV files with a header and the columns ``id`` (unique across all files), ``sample``
and ``sequence``; any further columns are kept as metadata. Each amplicon becomes one item:
its first ``length`` bases, padded at the end when it is shorter, in the layout of the
built-in ``dna_fasta`` adapter, so the built-in ``dna_views`` pair builder and ``dna_cnn``
encoder work on it unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from scicontrast.data_adapters import Adapter, Items
from scicontrast.data_adapters.dna.encoding import InvalidBaseError, encode_codes
from scicontrast.errors import ConfigError, InputDataError

REQUIRED_COLUMNS = ("id", "sample", "sequence")
PAYLOAD_COLUMNS = ["sequence", "window_start", "left_pad", "right_pad"]


class AmpliconTable(Adapter):
    """Amplicon TSV files -> one DNA item per amplicon.

    Args:
        paths: The TSV files.
        length: Bases kept per amplicon; shorter amplicons are padded.
        min_length: Shorter amplicons are an error (naming file and line).
    """

    # `scicontrast embed --model model.pt NEW.tsv` replaces `paths` with the new files.
    input_param = "paths"

    def __init__(self, paths: list[str], length: int = 120, min_length: int = 60) -> None:
        if not 1 <= min_length <= length:
            raise ConfigError(
                f"adapter amplicon_table: need 1 <= min_length <= length, got {min_length}, "
                f"{length}"
            )
        self.paths = [Path(p) for p in ([paths] if isinstance(paths, str) else paths)]
        self.length = length
        self.min_length = min_length

    def input_files(self) -> list[Path]:
        return list(self.paths)

    def read(self) -> Items:
        tables = [self._read_one(path) for path in self.paths]
        table = pd.concat(tables, ignore_index=True)
        repeated = table["item_id"].duplicated()
        if repeated.any():
            row = table[repeated].iloc[0]
            raise InputDataError(
                f"{row['source_file']}: line {row['line']}: id {row['item_id']!r} occurs twice"
            )
        meta = {
            "modality": "dna",
            "window": self.length,
            "flank": 0,
            "ambiguous": "uniform",
            "payload_columns": PAYLOAD_COLUMNS,
        }
        return Items(table.drop(columns="line"), meta)

    def _read_one(self, path: Path) -> pd.DataFrame:
        if not path.is_file():
            raise InputDataError(f"{path}: file not found")
        table = pd.read_csv(path, sep="\t", dtype={"id": str, "sample": str, "sequence": str})
        missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise InputDataError(f"{path}: missing columns {missing}")
        sequences = table["sequence"].fillna("").str.upper()
        for index, sequence in enumerate(sequences):
            line = index + 2  # the header is line 1
            if len(sequence) < self.min_length:
                raise InputDataError(
                    f"{path}: line {line}: amplicon {table['id'].iloc[index]!r} has "
                    f"{len(sequence)} bases, fewer than min_length={self.min_length}"
                )
            try:
                encode_codes(sequence)
            except InvalidBaseError as exc:
                raise InputDataError(f"{path}: line {line}: {exc}") from None
        kept = sequences.str[: self.length]
        extra = [c for c in table.columns if c not in REQUIRED_COLUMNS]
        return pd.DataFrame(
            {
                "item_id": table["id"],
                "sample": table["sample"],
                **{c: table[c] for c in extra},
                "source_file": str(path),
                "line": range(2, len(table) + 2),
                "sequence": kept,
                "window_start": 0,
                "left_pad": 0,
                "right_pad": self.length - kept.str.len(),
            }
        )
