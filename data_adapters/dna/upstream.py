r"""Upstream regions of annotated genes, read from GenBank, as windows of one locus each.

A gene whose 5' end (its first base, the start codon of a CDS) is at 0-based position
:math:`p` of a record of length :math:`n` has the **upstream region**

* plus strand, :math:`p` = ``location.parts[0].start``: bases
  :math:`[p - u, p + d)` of the record as read;
* minus strand, the gene's first base is ``location.parts[0].end - 1`` and its upstream lies
  to its *right*: bases :math:`[e - d, e + u)` with :math:`e` = ``parts[0].end``,
  reverse-complemented,

with ``u = upstream`` and ``d = downstream`` (bases into the gene), so every region reads
5' to 3' on the gene's strand and ends ``d`` bases after the start codon, the way promoter
sets align their windows to the transcription start. The region is cut into windows of
``window`` bases at ``stride`` (the last window ends at the region's end), each stored with
``flank`` more bases of the genome on each side (on the gene's strand), so that
:class:`~scicontrast.data_adapters.dna.views.DNAViews` can shift it by up to ``flank``.
The items table has the payload columns of the ``dna_fasta`` adapter (``sequence``,
``window_start``, ``left_pad``, ``right_pad``) and ``meta`` modality ``dna``; its ``locus``
column (the gene's ``locus_tag``, else its name, else its coordinates) names the object,
so ``dna_views`` with ``group_by: locus`` makes every window of one upstream region, on
either strand and shifted, a positive of every other (one locus, several reads of it).

``background = b > 0`` adds, per record, ``b`` windows at uniform random starts on a random
strand (seeded by ``seed``), each its own locus ``background:<record>:<start><strand>``:
reads of the rest of the genome (coding sequence above all) as further objects of the same
genome, which the contrastive loss then tells apart from the upstream regions.

A record marked ``circular`` in its LOCUS line wraps around its origin (bacterial
chromosomes: a gene near position 0 has its upstream region at the record's other end); on
a linear record a region or flank that runs off the record's end raises
:class:`~scicontrast.errors.InputDataError` naming the file, record and gene, unless
``off_end: skip`` (then the gene is left out and counted in ``meta["skipped_genes"]``).
A GenBank record without sequence, a file with no gene feature, or a file that is not
GenBank raise the same error; ``read`` writes nothing.
"""

from __future__ import annotations

import glob
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scicontrast.data_adapters.base import Adapter, Items
from scicontrast.data_adapters.dna.encoding import reverse_complement
from scicontrast.data_adapters.dna.files import PAYLOAD_COLUMNS
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import ADAPTERS

_GENBANK_SUFFIXES = (".gb", ".gbk", ".genbank", ".gbff")
OFF_END_POLICIES = ("error", "skip")


def region_bounds(five_prime: int, strand: int, upstream: int, downstream: int) -> tuple[int, int]:
    """``[begin, end)`` on the record (forward coordinates, possibly outside ``[0, n)``) of the
    upstream region of a gene whose first base is at ``five_prime`` (module docstring)."""
    if strand >= 0:
        return five_prime - upstream, five_prime + downstream
    return five_prime + 1 - downstream, five_prime + 1 + upstream


def cut(sequence: str, begin: int, end: int, circular: bool) -> str | None:
    """``sequence[begin:end]`` with wrap-around for a circular record; ``None`` when the
    stretch runs off a linear record's ends."""
    n = len(sequence)
    if 0 <= begin and end <= n:
        return sequence[begin:end]
    if not circular or end - begin > n:
        return None
    return "".join(sequence[i % n] for i in range(begin, end))


def window_offsets(length: int, window: int, stride: int) -> list[int]:
    """Starts of the windows of a region of ``length`` bases: ``0, stride, ...`` and one
    window ending at the region's end."""
    offsets = list(range(0, length - window + 1, stride))
    if offsets[-1] != length - window:
        offsets.append(length - window)
    return offsets


def _genbank_records(path: Path) -> Iterator[Any]:
    from Bio import SeqIO

    name = path.name.removesuffix(".gz")
    if not name.endswith(_GENBANK_SUFFIXES):
        raise InputDataError(
            f"{path}: genbank_upstream reads GenBank files ({', '.join(_GENBANK_SUFFIXES)}, "
            "optionally .gz): gene coordinates come from their features"
        )
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="ascii", errors="replace") as handle:
        yield from SeqIO.parse(handle, "genbank")


def _record_sequence(path: Path, index: int, record: Any) -> str:
    from Bio.Seq import UndefinedSequenceError

    try:
        return str(record.seq).upper()
    except UndefinedSequenceError:
        raise InputDataError(
            f"{path}: record {index} ({record.id}) has no sequence (no ORIGIN section); "
            "upstream regions need the bases"
        ) from None


def locus_name(feature: Any, record_id: str) -> str:
    """The gene's ``locus_tag``, else its ``gene`` name, else ``record:start-end``."""
    for key in ("locus_tag", "gene"):
        if key in feature.qualifiers:
            return str(feature.qualifiers[key][0])
    location = feature.location
    return f"{record_id}:{int(location.start) + 1}-{int(location.end)}"


@ADAPTERS.register("genbank_upstream")
class UpstreamAdapter(Adapter):
    """The upstream region of every annotated gene, as windows (module docstring).

    Args:
        paths: GenBank files or glob patterns (``.gz`` or not).
        upstream: Bases before the gene's first base (``u``).
        downstream: Bases into the gene (``d``); the region has ``u + d`` bases.
        window: Window length; at most ``u + d``.
        stride: Distance between window starts inside a region.
        flank: Bases of the genome kept on each side of a window (shifted views).
        feature: The feature type whose 5' ends are taken (``gene``, ``CDS``, ...).
        off_end: ``error`` or ``skip`` a gene whose region runs off a linear record.
        background: Random windows per record added as loci of their own (0: none).
        seed: Seed of the background windows.
    """

    input_param = "paths"

    def __init__(
        self,
        paths: list[str] | str,
        upstream: int = 200,
        downstream: int = 20,
        window: int = 81,
        stride: int = 40,
        flank: int = 8,
        feature: str = "gene",
        off_end: str = "error",
        background: int = 0,
        seed: int = 0,
    ) -> None:
        self.paths = [paths] if isinstance(paths, str) else [str(p) for p in paths]
        for key, value, low in (
            ("upstream", upstream, 0),
            ("downstream", downstream, 0),
            ("window", window, 1),
            ("stride", stride, 1),
            ("flank", flank, 0),
            ("background", background, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"adapter genbank_upstream: {key} must be an integer >= {low}")
        if window > upstream + downstream:
            raise ConfigError(
                f"adapter genbank_upstream: window {window} exceeds the region "
                f"(upstream + downstream = {upstream + downstream})"
            )
        if off_end not in OFF_END_POLICIES:
            raise ConfigError(
                f"adapter genbank_upstream: off_end must be one of {OFF_END_POLICIES}"
            )
        self.upstream, self.downstream = upstream, downstream
        self.window, self.stride, self.flank = window, stride, flank
        self.feature, self.off_end = feature, off_end
        self.background, self.seed = background, seed

    def input_files(self) -> list[Path]:
        files: list[Path] = []
        for pattern in self.paths:
            if any(c in pattern for c in "*?["):
                matches = sorted(glob.glob(pattern, recursive=True))
                if not matches:
                    raise InputDataError(f"{pattern}: no file matches")
                files.extend(Path(m) for m in matches)
            else:
                files.append(Path(pattern))
        return files

    def read(self) -> Items:
        rows: list[dict[str, Any]] = []
        skipped = 0
        for path in self.input_files():
            if not path.is_file():
                raise InputDataError(f"{path}: no such file")
            genes = 0
            for index, record in enumerate(_genbank_records(path), start=1):
                sequence = _record_sequence(path, index, record)
                circular = record.annotations.get("topology") == "circular"
                where = f"{path}: record {index} ({record.id})"
                for feature in record.features:
                    if feature.type != self.feature:
                        continue
                    genes += 1
                    gene_rows = self._gene_windows(sequence, circular, feature, record.id)
                    if gene_rows is None:
                        if self.off_end == "error":
                            raise InputDataError(
                                f"{where}: the upstream region of gene "
                                f"{locus_name(feature, record.id)} runs off the linear "
                                "record's end (off_end: skip leaves such genes out)"
                            )
                        skipped += 1
                        continue
                    rows += [{**r, "source_file": str(path)} for r in gene_rows]
                rows += self._background(sequence, circular, record.id, path, index)
            if genes == 0:
                raise InputDataError(f"{path}: no {self.feature!r} feature in any record")
        return self._items(pd.DataFrame(rows), skipped)

    def _gene_windows(
        self, sequence: str, circular: bool, feature: Any, record_id: str
    ) -> list[dict[str, Any]] | None:
        """The windows of one gene's region, or ``None`` if it runs off a linear record."""
        first = feature.location.parts[0]
        strand = -1 if first.strand == -1 else 1
        five_prime = int(first.start) if strand == 1 else int(first.end) - 1
        begin, end = region_bounds(five_prime, strand, self.upstream, self.downstream)
        extended = cut(sequence, begin - self.flank, end + self.flank, circular)
        if extended is None:
            return None
        if strand == -1:
            extended = reverse_complement(extended)
        locus = locus_name(feature, record_id)
        width = self.window + 2 * self.flank
        return [
            {
                "item_id": f"{locus}:{offset - self.upstream:+d}",
                "record_id": record_id,
                "locus": locus,
                "gene": str(feature.qualifiers.get("gene", [locus])[0]),
                "strand": "+" if strand == 1 else "-",
                "position": offset - self.upstream,
                "sequence": extended[offset : offset + width],
            }
            for offset in window_offsets(end - begin, self.window, self.stride)
        ]

    def _background(
        self, sequence: str, circular: bool, record_id: str, path: Path, index: int
    ) -> list[dict[str, Any]]:
        """``background`` windows of the record at random starts and strands."""
        width = self.window + 2 * self.flank
        if self.background == 0:
            return []
        if len(sequence) < width:
            raise InputDataError(
                f"{path}: record {index} ({record_id}) is shorter ({len(sequence)} nt) than a "
                f"background window with its flanks ({width} nt)"
            )
        rng = np.random.default_rng([self.seed, index])
        starts = rng.integers(0, len(sequence) - width + 1, size=self.background)
        minus = rng.random(self.background) < 0.5
        rows = []
        for start, reverse in zip(starts.tolist(), minus.tolist(), strict=True):
            stretch = sequence[start : start + width]
            strand = "-" if reverse else "+"
            locus = f"background:{record_id}:{start + self.flank + 1}{strand}"
            rows.append(
                {
                    "item_id": locus,
                    "record_id": record_id,
                    "locus": locus,
                    "gene": "",
                    "strand": strand,
                    "position": 0,
                    "sequence": reverse_complement(stretch) if reverse else stretch,
                    "source_file": str(path),
                }
            )
        return rows

    def _items(self, table: pd.DataFrame, skipped: int) -> Items:
        table["window_start"] = self.flank
        table["left_pad"] = 0
        table["right_pad"] = 0
        # Two features with one locus tag (or two background draws at one start): number
        # the repeats #2, #3, ... so that item ids stay unique.
        repeat = table.groupby("item_id").cumcount()
        table.loc[repeat > 0, "item_id"] += "#" + (repeat[repeat > 0] + 1).astype(str)
        return Items(
            table=table,
            meta={
                "modality": "dna",
                "window": self.window,
                "stride": self.stride,
                "flank": self.flank,
                "ambiguous": "uniform",
                "payload_columns": list(PAYLOAD_COLUMNS),
                "metadata_columns": ["record_id", "locus", "gene", "strand", "position"],
                "upstream": self.upstream,
                "downstream": self.downstream,
                "skipped_genes": skipped,
            },
        )
