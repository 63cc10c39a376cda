"""The file formats and names the FASTA/FASTQ adapter reads, and one record's windows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
