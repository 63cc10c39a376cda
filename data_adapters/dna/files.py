"""The file formats and names the FASTA/FASTQ adapter reads, one record's windows, and which
records a labels table covers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FORMAT_OF_SUFFIX = {
    ".fa": "fasta",
    ".fasta": "fasta",
    ".fna": "fasta",
    ".fas": "fasta",
    ".fq": "fastq",
    ".fastq": "fastq",
}
GLOB_CHARS = re.compile(r"[*?\[]")
TABLE_COLUMNS = (
    "item_id",
    "record_id",
    "source_file",
    "start",
    "end",
    "sequence",
    "window_start",
    "left_pad",
    "right_pad",
)
PAYLOAD_COLUMNS = ["sequence", "window_start", "left_pad", "right_pad"]
# The row-aligned array ``uint8 [N, window + 2 * flank]`` of each row's padded codes; sets
# written before it existed have only the payload columns (``meta["codes_array"]`` absent).
CODES_ARRAY = "codes"


@dataclass
class Windows:
    """The kept windows of one record, as columns."""

    path: Path
    record_id: str
    starts: np.ndarray
    ends: np.ndarray
    sequences: list[str]
    offsets: np.ndarray
    left_pads: np.ndarray
    right_pads: np.ndarray
    codes: np.ndarray  # uint8 [n, window + 2 * flank]: flank, window, flank; 0 = padding


def strip_gz(path: Path) -> tuple[str, bool]:
    """The file name without ``.gz``, and whether it was gzipped."""
    name = path.name
    if name.lower().endswith(".gz"):
        return name[:-3], True
    return name, False


def file_stem(path: Path) -> str:
    name, _ = strip_gz(path)
    return Path(name).stem


def biopython_message(exc: Exception) -> str:
    """Biopython's first paragraph, on one line (its messages can be a page long)."""
    return " ".join(str(exc).split("\n\n")[0].split())


class LabelState:
    """Which records a labels table covers, gathered as the records stream past."""

    def __init__(self, labels: pd.DataFrame | None) -> None:
        self.labels = labels
        self._keys = set() if labels is None else set(labels.index)
        self.matched: set[str] = set()
        self.missing: set[str] = set()
        self.first_missing: tuple[str, Path] = ("", Path())

    def see(self, record_id: str, path: Path) -> None:
        if self.labels is None:
            return
        if record_id in self._keys:
            self.matched.add(record_id)
        elif record_id not in self.missing:
            if not self.missing:
                self.first_missing = (record_id, path)
            self.missing.add(record_id)
