"""Whole genomes as one items row per record, the bases stored once as memory-mapped codes.

Layout (an :class:`~scicontrast.data_adapters.base.Items` set)::

    table   one row per record: item_id "{genome}|{record_id}", genome, record_id,
            description, source_file, length, offset, then the metadata columns of the
            genome table (species, strain_label, ...)
    extras  "codes": uint8 [sum of lengths], every record's bases back to back, record i at
            [offset_i, offset_i + length_i); codes as in
            :mod:`~scicontrast.data_adapters.dna.encoding` (1..4 = A, C, G, T, 5..15 the IUPAC
            ambiguity codes, 0 never occurs)
    meta    modality "dna_genome"; "memory_mapped_extras": ["codes"], so that
            ``Items.load`` maps the codes instead of reading them (a 130 Mb corpus costs
            130 MB of disk and only the pages that reads touch)

One byte per base rather than two bits keeps ``N`` and the other IUPAC codes, which real
assemblies hold, and makes a read a slice. Windows and reads are cut from the codes when a
view is made (:mod:`scicontrast.data_adapters.dna.genome_reads`), never stored as a table.

:class:`GenomeAdapter` reads FASTA and GenBank files (``.gz`` or not, any size: a record is
streamed line by line into one byte string and encoded with a vectorised lookup), one genome
per file, the genome id being the file name without its suffixes, and joins a genome table
(e.g. ``genomes.tsv``: genome_id, species, strain_label, ...). Bad input raises
:class:`~scicontrast.errors.InputDataError` naming the file and the record: a GenBank record
without sequence, an empty or all-``N`` record, an invalid character, a genome table that
names a genome with no file or a file with no row in the table. ``read`` writes nothing.
"""

from __future__ import annotations

import glob
import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from scicontrast.data_adapters.base import Adapter, Items
from scicontrast.data_adapters.dna.encoding import InvalidBaseError, encode_codes
from scicontrast.errors import InputDataError
from scicontrast.registry import ADAPTERS

CODES_EXTRA = "codes"
N_CODE = int(encode_codes("N")[0])
_FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas")
_GENBANK_SUFFIXES = (".gb", ".gbk", ".genbank", ".gbff")
TABLE_COLUMNS = ["item_id", "genome", "record_id", "description", "source_file", "length"]


def genome_id_of(path: Path) -> str:
    """The file name without ``.gz`` and its format suffix: ``E_coli.fa.gz`` -> ``E_coli``."""
    name = path.name.removesuffix(".gz")
    for suffix in _FASTA_SUFFIXES + _GENBANK_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    raise InputDataError(
        f"{path}: unknown sequence format (expected one of "
        f"{', '.join(_FASTA_SUFFIXES + _GENBANK_SUFFIXES)}, optionally .gz)"
    )


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="ascii", errors="replace")
    return open(path, encoding="ascii", errors="replace")


def _fasta_records(path: Path) -> Iterator[tuple[str, str, str]]:
    """``(record_id, description, sequence)`` of each record, streamed line by line."""
    header: tuple[str, str] | None = None
    chunks: list[str] = []
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.startswith(">"):
                if header is not None:
                    yield (*header, "".join(chunks))
                record_id, _, description = line[1:].strip().partition(" ")
                header, chunks = (record_id, description), []
            elif header is None:
                if line.strip():
                    raise InputDataError(f"{path}: line {line_number}: sequence before a header")
            else:
                chunks.append(line.strip())
    if header is None:
        raise InputDataError(f"{path}: no FASTA record")
    yield (*header, "".join(chunks))


def _genbank_records(path: Path) -> Iterator[tuple[str, str, str]]:
    from Bio import SeqIO
    from Bio.Seq import UndefinedSequenceError

    with _open_text(path) as handle:
        for index, record in enumerate(SeqIO.parse(handle, "genbank")):
            try:
                sequence = str(record.seq)
            except UndefinedSequenceError:
                raise InputDataError(
                    f"{path}: record {index + 1} ({record.id}) has no sequence (no ORIGIN "
                    "section); use a GenBank file with sequence or the FASTA"
                ) from None
            yield record.id, record.description, sequence


def read_records(path: Path) -> Iterator[tuple[str, str, np.ndarray]]:
    """``(record_id, description, codes uint8 [L])`` of each record of a FASTA or GenBank file.

    Raises ``InputDataError`` naming the file and record for an empty or all-``N`` record or
    an invalid character.
    """
    name = path.name.removesuffix(".gz")
    records = _genbank_records(path) if name.endswith(_GENBANK_SUFFIXES) else _fasta_records(path)
    for index, (record_id, description, sequence) in enumerate(records, start=1):
        where = f"{path}: record {index} ({record_id})"
        try:
            codes = encode_codes(sequence)
        except InvalidBaseError as exc:
            raise InputDataError(f"{where}: {exc}") from None
        if len(codes) == 0:
            raise InputDataError(f"{where}: empty sequence")
        if np.all(codes == N_CODE):
            raise InputDataError(f"{where}: the sequence is all N ({len(codes)} bases)")
        yield record_id, description, codes


@ADAPTERS.register("genomes")
class GenomeAdapter(Adapter):
    """Whole genomes, one file each, into a memory-mapped record store (module docstring).

    Args:
        paths: FASTA or GenBank files or glob patterns, ``.gz`` or not; one genome per file.
        table: Optional genome table (CSV, or TSV for ``.tsv``/``.tab``/``.txt``) with one row
            per genome; its other columns become metadata of every record of the genome.
            Every genome read must have a row and every row a file.
        table_key: The table's column holding the genome id (the file name without suffixes).
        genomes: Optional list of genome ids to keep (others are not read); each must exist.
    """

    input_param = "paths"
    training_only_params = ("table", "genomes")

    def __init__(
        self,
        paths: list[str] | str,
        table: str | None = None,
        table_key: str = "genome_id",
        genomes: list[str] | None = None,
    ) -> None:
        self.paths = [paths] if isinstance(paths, str) else [str(p) for p in paths]
        self.table = table
        self.table_key = table_key
        self.genomes = None if genomes is None else list(genomes)

    def input_files(self) -> list[Path]:
        """The sequence files (glob patterns expanded, literal paths as given, even when they
        do not exist yet: a workflow may build them), then the genome table."""
        table = [] if self.table is None else [Path(self.table)]
        return self._sequence_files() + table

    def _sequence_files(self) -> list[Path]:
        files: list[Path] = []
        for pattern in self.paths:
            if any(c in pattern for c in "*?["):
                matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
                if not matches:
                    raise InputDataError(f"{pattern}: no file matches")
                files.extend(matches)
            else:
                files.append(Path(pattern))
        if self.genomes is not None:
            known = {genome_id_of(f) for f in files}
            unknown = sorted(set(self.genomes) - known)
            if unknown:
                raise InputDataError(f"genomes {unknown} have no file among {self.paths}")
            files = [f for f in files if genome_id_of(f) in set(self.genomes)]
        seen: dict[str, Path] = {}
        for f in files:
            genome = genome_id_of(f)
            if genome in seen:
                raise InputDataError(f"{f}: genome {genome!r} is also read from {seen[genome]}")
            seen[genome] = f
        return files

    def _genome_table(self, genomes: list[str]) -> pd.DataFrame | None:
        if self.table is None:
            return None
        path = Path(self.table)
        sep = "\t" if path.suffix in (".tsv", ".tab", ".txt") else ","
        table = pd.read_csv(path, sep=sep, dtype=str)
        if self.table_key not in table.columns:
            raise InputDataError(f"{path}: no column {self.table_key!r}")
        if self.genomes is not None:
            table = table[table[self.table_key].isin(self.genomes)]
        no_file = sorted(set(table[self.table_key]) - set(genomes))
        if no_file:
            raise InputDataError(f"{path}: genome {no_file[0]!r} has no sequence file")
        no_row = sorted(set(genomes) - set(table[self.table_key]))
        if no_row:
            raise InputDataError(f"{path}: genome {no_row[0]!r} has a file but no row")
        repeated = table[self.table_key].duplicated()
        if repeated.any():
            first = table.loc[repeated, self.table_key].iloc[0]
            raise InputDataError(f"{path}: genome {first!r} has more than one row")
        return table.set_index(self.table_key)

    def read(self) -> Items:
        files = self._sequence_files()
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise InputDataError(f"{missing[0]}: no such file")
        genome_table = self._genome_table([genome_id_of(f) for f in files])
        rows, chunks, offset = [], [], 0
        for path in files:
            genome = genome_id_of(path)
            for record_id, description, codes in read_records(path):
                item_id = f"{genome}|{record_id}"
                rows.append(
                    (item_id, genome, record_id, description, str(path), len(codes), offset)
                )
                chunks.append(codes)
                offset += len(codes)
        table = pd.DataFrame(rows, columns=[*TABLE_COLUMNS, "offset"])
        if genome_table is not None:
            extra = genome_table.drop(columns=[c for c in genome_table if c in table.columns])
            table = table.join(extra, on="genome")
        return store_items(table, np.concatenate(chunks))


def store_items(table: pd.DataFrame, codes: np.ndarray) -> Items:
    """An items set of records whose ``offset``/``length`` columns index ``codes``."""
    return Items(
        table=table.reset_index(drop=True),
        meta={
            "modality": "dna_genome",
            "memory_mapped_extras": [CODES_EXTRA],
            "payload_columns": ["offset"],
        },
        extras={CODES_EXTRA: np.ascontiguousarray(codes, dtype=np.uint8)},
    )


def record_codes(items: Items, row: int) -> np.ndarray:
    """The codes ``uint8 [length]`` of record ``row`` (a view into the store)."""
    offset, length = int(items.table["offset"].iat[row]), int(items.table["length"].iat[row])
    return items.extras[CODES_EXTRA][offset : offset + length]
