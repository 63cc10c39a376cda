"""The DNA pair builder: strand, shift, point-mutation, masked-block and neighbour views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scicontrast.data_adapters.base import Items, ViewDataset, check_pairs_table
from scicontrast.data_adapters.dna.encoding import one_hot
from scicontrast.data_adapters.dna.reading import FastaAdapter
from scicontrast.data_adapters.dna.views import DNAViews
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.registry import PAIR_BUILDERS

WINDOW, FLANK = 30, 6


@pytest.fixture
def records() -> dict[str, str]:
    rng = np.random.default_rng(0)
    return {
        f"r{i}": "".join(rng.choice(list("ACGTACGTACGTN"), size=n))
        for i, n in enumerate([95, 64, 30])
    }


@pytest.fixture
def items(tmp_path, records) -> Items:
    path = tmp_path / "x.fa"
    path.write_text("".join(f">{r}\n{s}\n" for r, s in records.items()))
    adapter = FastaAdapter(
        paths=[str(path)], window=WINDOW, stride=15, flank=FLANK, max_ambiguous_fraction=1.0
    )
    return adapter.read()


def expected_view(record: str, start: int, shift: int) -> np.ndarray:
    """One-hot of record[start+shift : start+shift+WINDOW], zero columns outside the record."""
    columns = np.zeros((4, WINDOW), dtype=np.float32)
    for j in range(WINDOW):
        position = start + shift + j
        if 0 <= position < len(record):
            columns[:, j] = one_hot(record[position])[:, 0]
    return columns


def test_build_pairs_table(items):
    pairs = DNAViews(max_shift=3).build(items)
    check_pairs_table(pairs, items, "test")
    assert len(pairs) == 2 * len(items)
    assert pairs["group_id"].tolist() == np.repeat(np.arange(len(items)), 2).tolist()
    assert pairs["view"].tolist()[:2] == ["forward", "reverse_complement"]
    assert (pairs.groupby("group_id")["item_id"].nunique() == 1).all()
    shift_only = DNAViews(reverse_complement=False, max_shift=3).build(items)
    assert set(shift_only["view"]) == {"forward"}


def test_group_by_makes_every_window_of_a_record_one_object(items):
    pairs = DNAViews(max_shift=3, group_by="record_id").build(items)
    check_pairs_table(pairs, items, "test")
    record_of = dict(zip(items.table["item_id"], items.table["record_id"], strict=True))
    records_per_group = pairs.groupby("group_id")["item_id"].agg(
        lambda ids: {record_of[i] for i in ids}
    )
    assert all(len(r) == 1 for r in records_per_group)
    assert pairs["group_id"].nunique() == items.table["record_id"].nunique()
    windows_per_record = items.table.groupby("record_id").size()
    views_per_group = pairs.groupby("group_id").size()
    assert sorted(views_per_group) == sorted(2 * windows_per_record)
    with pytest.raises(ConfigError, match=r"group_by names column 'genome'"):
        DNAViews(group_by="genome").build(items)


def test_config_errors(items):
    with pytest.raises(ConfigError, match=r"reverse_complement.*max_shift"):
        DNAViews(reverse_complement=False, max_shift=0)
    with pytest.raises(ConfigError, match="max_shift"):
        DNAViews(max_shift=-1)
    for rate in (-0.1, 1.0, True, "0.1"):
        with pytest.raises(ConfigError, match="mutation_rate"):
            DNAViews(mutation_rate=rate)
    DNAViews(reverse_complement=False, mutation_rate=0.05)  # mutations alone make two views
    for fraction in (-0.1, 1.0, True, "0.5", None):
        with pytest.raises(ConfigError, match="mask_fraction"):
            DNAViews(mask_fraction=fraction)
    DNAViews(reverse_complement=False, mask_fraction=0.25)  # masks alone make two views
    too_far = DNAViews(max_shift=FLANK + 1)
    with pytest.raises(ConfigError, match=f"max_shift={FLANK + 1}.*flank={FLANK}"):
        too_far.bind(items)
    with pytest.raises(ConfigError, match="flank"):
        too_far.build(items)
    other = Items(table=items.table, meta={**items.meta, "modality": "image"})
    with pytest.raises(ConfigError, match="modality"):
        DNAViews().bind(other)


def test_views_shape_and_reverse_complement_without_shift(items):
    builder = DNAViews(max_shift=0)
    builder.bind(items)
    rng = np.random.default_rng(0)
    for i in range(len(items)):
        forward = builder.make_view(i, "forward", rng)
        reverse = builder.make_view(i, "reverse_complement", rng)
        assert forward.shape == (4, WINDOW) and forward.dtype == torch.float32
        assert torch.equal(reverse, forward.flip(-2).flip(-1))


def test_shifted_views_are_the_expected_slices(items, records):
    max_shift = FLANK
    builder = DNAViews(max_shift=max_shift)
    builder.bind(items)
    shifts_seen = set()
    for seed in range(20):
        for i, row in enumerate(items.table.itertuples()):
            rng = np.random.default_rng([seed, i])
            shift = int(np.random.default_rng([seed, i]).integers(-max_shift, max_shift + 1))
            shifts_seen.add(shift)
            expected = expected_view(records[row.record_id], row.start, shift)
            view = builder.make_view(i, "forward", rng).numpy()
            np.testing.assert_array_equal(view, expected)
    assert shifts_seen == set(range(-max_shift, max_shift + 1))


def test_mutations_substitute_another_base_at_the_rate_and_keep_n_and_padding(items):
    rate = 0.2
    builder, plain = DNAViews(max_shift=0, mutation_rate=rate), DNAViews(max_shift=0)
    builder.bind(items)
    plain.bind(items)
    changed = clean = 0
    for i in range(len(items)):
        original = plain.canonical(i)
        is_base = (original == 1).any(dim=0)  # one-hot columns; N is 0.25 each, padding 0
        for seed in range(200):
            view = builder.make_view(i, "forward", np.random.default_rng([seed, i]))
            differs = (view != original).any(dim=0)
            assert not differs[~is_base].any()
            assert torch.equal(view[:, differs].sum(dim=0), torch.ones(int(differs.sum())))
            changed += int(differs.sum())
            clean += int(is_base.sum())
    assert changed / clean == pytest.approx(rate, abs=0.01)


def test_mutated_views_differ_per_draw_and_repeat_per_seed(items):
    builder = DNAViews(max_shift=0, mutation_rate=0.1)
    builder.bind(items)
    reverse = builder.make_view(0, "reverse_complement", np.random.default_rng(3))
    assert torch.equal(
        reverse, builder.make_view(0, "reverse_complement", np.random.default_rng(3))
    )
    forward = builder.make_view(0, "forward", np.random.default_rng(3))
    assert torch.equal(reverse, forward.flip(-2).flip(-1))  # the same draws, the other strand
    assert not torch.equal(forward, builder.make_view(0, "forward", np.random.default_rng(4)))
    plain = DNAViews()
    plain.bind(items)
    assert torch.equal(builder.canonical(0), plain.canonical(0))  # embedding mutates nothing


def test_masks_hide_one_block_of_the_fraction_and_keep_every_other_base(items):
    fraction = 0.3
    length = round(fraction * WINDOW)
    builder, plain = DNAViews(max_shift=0, mask_fraction=fraction), DNAViews(max_shift=0)
    builder.bind(items)
    plain.bind(items)
    starts = set()
    for i in range(len(items)):
        original = plain.canonical(i)
        for seed in range(60):
            view = builder.make_view(i, "forward", np.random.default_rng([seed, i]))
            hidden = np.flatnonzero((view != original).any(dim=0).numpy())
            kept = np.setdiff1d(np.arange(WINDOW), hidden)
            assert torch.equal(view[:, kept], original[:, kept])
            # The block is contiguous, all padding, and exactly `length` long wherever the
            # original already had padding inside it (then fewer columns change).
            block = (view == 0).all(dim=0).numpy() & ~(original == 0).all(dim=0).numpy()
            assert set(np.flatnonzero(block)) == set(hidden)
            if hidden.size:
                assert hidden[-1] - hidden[0] < length
                starts.add(int(hidden[0]))
            if not (original == 0).all(dim=0).any():
                assert hidden.size == length and hidden[-1] - hidden[0] == length - 1
    assert min(starts) == 0 and max(starts) == WINDOW - length  # every start can be drawn


def test_masked_views_differ_per_draw_and_mask_nothing_when_off(items):
    builder = DNAViews(max_shift=2, mask_fraction=0.5)
    builder.bind(items)
    forward = builder.make_view(0, "forward", np.random.default_rng(3))
    reverse = builder.make_view(0, "reverse_complement", np.random.default_rng(3))
    assert torch.equal(reverse, forward.flip(-2).flip(-1))  # the same draws, the other strand
    assert not torch.equal(forward, builder.make_view(0, "forward", np.random.default_rng(4)))
    plain = DNAViews(max_shift=2)
    plain.bind(items)
    assert torch.equal(builder.canonical(0), plain.canonical(0))  # embedding masks nothing
    # Off, nothing extra is drawn: views (and so earlier runs) are those of the plain builder.
    off = DNAViews(max_shift=2, mask_fraction=0)
    off.bind(items)
    for seed in range(5):
        assert torch.equal(
            off.make_view(1, "forward", np.random.default_rng(seed)),
            plain.make_view(1, "forward", np.random.default_rng(seed)),
        )


def test_canonical_view_is_the_unshifted_window(items, records):
    builder = DNAViews(max_shift=FLANK)
    builder.bind(items)
    assert builder.canonical_view == "forward"
    for i, row in enumerate(items.table.itertuples()):
        window = records[row.record_id][row.start : row.end]
        np.testing.assert_array_equal(builder.canonical(i).numpy(), one_hot(window))


def test_same_seed_same_view(items):
    builder = DNAViews(max_shift=FLANK)
    builder.bind(items)
    first = builder.make_view(1, "reverse_complement", np.random.default_rng(7))
    again = builder.make_view(1, "reverse_complement", np.random.default_rng(7))
    assert torch.equal(first, again)
    others = [builder.make_view(1, "forward", np.random.default_rng(s)) for s in range(10)]
    assert any(not torch.equal(others[0], o) for o in others[1:])


def test_padding_is_zero_and_distinct_from_n(tmp_path):
    path = tmp_path / "x.fa"
    path.write_text(">short\nACNNGT\n")
    items = FastaAdapter(
        paths=[str(path)], window=10, flank=2, short_sequences="pad", max_ambiguous_fraction=1
    ).read()
    builder = DNAViews(max_shift=2)
    builder.bind(items)
    view = builder.canonical(0).numpy()
    np.testing.assert_array_equal(view[:, :6], one_hot("ACNNGT"))
    np.testing.assert_array_equal(view[:, 6:], 0)
    assert view[:, 2].sum() == pytest.approx(1.0)


def test_unknown_view_and_unbound_builder(items):
    builder = DNAViews()
    with pytest.raises(RuntimeError, match="bind"):
        builder.make_view(0, "forward", None)
    builder.bind(items)
    with pytest.raises(ValueError, match="unknown view 'sideways'"):
        builder.make_view(0, "sideways", None)


def test_bind_after_save_and_load(tmp_path, items):
    items.save(tmp_path / "items")
    loaded = Items.load(tmp_path / "items")
    a, b = DNAViews(max_shift=2), DNAViews(max_shift=2)
    a.bind(items)
    b.bind(loaded)
    for i in range(len(items)):
        assert torch.equal(a.canonical(i), b.canonical(i))


def test_bind_rejects_inconsistent_items(items):
    broken = items.table.copy()
    broken.loc[1, "sequence"] = broken.loc[1, "sequence"][:-2] + "X?"
    with pytest.raises(InputDataError, match=f"{broken.loc[1, 'item_id']}.*'X'"):
        DNAViews().bind(Items(table=broken, meta=items.meta))
    broken = items.table.copy()
    broken.loc[2, "left_pad"] += 1
    with pytest.raises(InputDataError, match=f"{broken.loc[2, 'item_id']}.*window"):
        DNAViews().bind(Items(table=broken, meta=items.meta))


def test_view_dataset_draws_pairs(items):
    builder = PAIR_BUILDERS.create({"name": "dna_views", "params": {"max_shift": 3}})
    pairs = builder.build(items)
    dataset = ViewDataset(items, pairs, builder, seed=0)
    views, group = dataset[2]
    assert views.shape == (2, 4, WINDOW) and group == 2
    again, _ = dataset[2]
    assert torch.equal(views, again)


def test_bind_is_fast_enough_for_many_windows(tmp_path: Path):
    rng = np.random.default_rng(1)
    sequence = "".join(rng.choice(list("ACGT"), size=200_000))
    path = tmp_path / "big.fa"
    path.write_text(f">chr\n{sequence}\n")
    items = FastaAdapter(paths=[str(path)], window=100, stride=10, flank=5).read()
    assert len(items) > 19_000
    builder = DNAViews(max_shift=5)
    builder.bind(items)
    row = items.table.iloc[-1]
    np.testing.assert_array_equal(
        builder.canonical(len(items) - 1).numpy(), one_hot(sequence[row["start"] : row["end"]])
    )


def test_symmetry_only_is_the_reverse_complement_without_shift(items):
    builder = DNAViews(max_shift=FLANK)
    name, symmetry = builder.symmetry_only()
    assert name == "reverse complement" and builder.max_shift == FLANK
    symmetry.bind(items)
    rng = np.random.default_rng(0)
    for i in range(len(items)):
        reverse = symmetry.make_view(i, "reverse_complement", rng)
        assert torch.equal(reverse, symmetry.canonical(i).flip(-2).flip(-1))
    # Nothing to drop: no shift, shift-only views, or windows grouped by record.
    assert DNAViews(max_shift=0).symmetry_only() is None
    assert DNAViews(reverse_complement=False, max_shift=2).symmetry_only() is None
    assert DNAViews(max_shift=2, group_by="record_id").symmetry_only() is None
    _, without_mutations = DNAViews(mutation_rate=0.1).symmetry_only()
    assert without_mutations.mutation_rate == 0 and without_mutations.max_shift == 0
    _, without_masks = DNAViews(mask_fraction=0.5).symmetry_only()
    assert without_masks.mask_fraction == 0


@pytest.fixture
def two_compositions(tmp_path) -> Items:
    """Windows of an AT-rich and a GC-rich source (6 records each), plus an exact copy of
    the first record: composition says which source a window comes from."""
    rng = np.random.default_rng(5)
    at_rich, gc_rich = [0.4, 0.1, 0.1, 0.4], [0.1, 0.4, 0.4, 0.1]
    records = {
        f"{name}{i}": "".join(rng.choice(list("ACGT"), size=WINDOW, p=p))
        for name, p in (("at", at_rich), ("gc", gc_rich))
        for i in range(6)
    }
    records["copy_of_at0"] = records["at0"]
    path = tmp_path / "mixed.fa"
    path.write_text("".join(f">{r}\n{s}\n" for r, s in records.items()))
    return FastaAdapter(paths=[str(path)], window=WINDOW, flank=FLANK).read()


def test_kmer_counts_count_every_overlapping_clean_word():
    from scicontrast.data_adapters.dna.encoding import PAD_CODE, encode_codes
    from scicontrast.data_adapters.dna.kmers import kmer_counts

    codes = np.stack([encode_codes("ACGTA"), np.r_[encode_codes("ANAA"), [PAD_CODE]]])
    counts = kmer_counts(codes, 2)
    assert counts.shape == (2, 16)
    word = {"AC": 1, "CG": 6, "GT": 11, "TA": 12, "AA": 0}  # A0 C1 G2 T3, first base high
    assert counts[0].tolist() == [
        1.0 if w in (word["AC"], word["CG"], word["GT"], word["TA"]) else 0.0 for w in range(16)
    ]
    assert counts[1].tolist() == [1.0] + [0.0] * 15  # AN and NA skipped, padding too


def test_composition_neighbours_share_the_source_and_exclude_the_window(two_compositions):
    builder = DNAViews(neighbours=3, neighbour_k=2)
    builder.bind(two_compositions)
    neighbours = builder.composition_neighbours()
    records = two_compositions.table["record_id"].to_numpy()
    source = np.array([r.removeprefix("copy_of_")[:2] for r in records])
    assert neighbours.shape == (len(records), 3)
    assert (neighbours != np.arange(len(records))[:, None]).all()
    assert (source[neighbours] == source[:, None]).all()
    # An identical window is nearest of all; the window itself never is.
    first, copy = (np.flatnonzero(records == r)[0] for r in ("at0", "copy_of_at0"))
    assert neighbours[first, 0] == copy and neighbours[copy, 0] == first


def test_neighbour_view_is_a_forward_view_of_a_drawn_neighbour(two_compositions):
    builder = DNAViews(max_shift=0, neighbours=3, neighbour_k=2)
    builder.bind(two_compositions)
    neighbours = builder.composition_neighbours()
    for i in range(len(two_compositions)):
        assert torch.equal(
            builder.make_view(i, "neighbour", None), builder.canonical(neighbours[i, 0])
        )
        shown = set()
        for seed in range(40):
            view = builder.make_view(i, "neighbour", np.random.default_rng([seed, i]))
            matches = [j for j in neighbours[i] if torch.equal(view, builder.canonical(j))]
            assert matches
            shown.update(matches)
        assert shown == set(neighbours[i].tolist())


def test_pairs_table_with_neighbours_lists_the_candidates(two_compositions):
    builder = DNAViews(max_shift=2, neighbours=2, neighbour_k=2)
    pairs = builder.build(two_compositions)
    check_pairs_table(pairs, two_compositions, "test")
    assert pairs["view"].tolist()[:3] == ["forward", "reverse_complement", "neighbour"]
    ids = two_compositions.table["item_id"].to_numpy()
    listed = pairs.loc[pairs["view"] == "neighbour", "neighbour_ids"].tolist()
    builder.bind(two_compositions)
    assert listed == [list(ids[rows]) for rows in builder.composition_neighbours()]
    assert pairs.loc[pairs["view"] != "neighbour", "neighbour_ids"].isna().all()
    views, _ = ViewDataset(two_compositions, pairs, builder, seed=0)[0]
    assert views.shape == (3, 4, WINDOW)
    _, symmetry = builder.symmetry_only()
    assert symmetry.neighbours == 0 and "neighbour" not in set(
        symmetry.build(two_compositions)["view"]
    )


def test_neighbour_config_errors(two_compositions):
    for key, value in (
        ("neighbours", -1),
        ("neighbours", 1.5),
        ("neighbour_k", 0),
        ("neighbour_k", 7),
    ):
        with pytest.raises(ConfigError, match=f"params.{key}"):
            DNAViews(**{key: value})
    DNAViews(reverse_complement=False, neighbours=1)  # a neighbour makes a second view
    with pytest.raises(ConfigError, match=f"neighbours={len(two_compositions)} needs more"):
        DNAViews(neighbours=len(two_compositions)).build(two_compositions)
    plain = DNAViews()
    plain.bind(two_compositions)
    with pytest.raises(ValueError, match="neighbours is 0"):
        plain.make_view(0, "neighbour", None)


def test_shared_stretches_link_tiled_windows_on_either_strand():
    from scicontrast.data_adapters.dna.encoding import (
        overlap_groups,
        reverse_complement,
        shared_stretches,
    )

    rng = np.random.default_rng(0)
    genome = "".join(rng.choice(list("ACGT"), 300))
    other = "".join(rng.choice(list("ACGT"), 60))
    windows = [
        genome[0:60],
        genome[30:90],  # shares 30 bases with the first
        genome[69:129],  # shares 21 bases with the second, none with the first
        reverse_complement(genome[200:260]),
        genome[220:280],  # shares 40 bases with the window above, read on the other strand
        other,
        genome[149:170] + "N" * 39,  # 21 bases of genome, none shared with any window above
    ]
    linked = shared_stretches(windows, stretch=20)
    assert (linked != linked.T).nnz == 0 and linked.diagonal().sum() == 0
    assert {tuple(pair) for pair in np.argwhere(linked.toarray()) if pair[0] < pair[1]} == {
        (0, 1),
        (1, 2),
        (3, 4),
    }
    assert not shared_stretches(windows, stretch=22)[1, 2]  # 21 shared bases are too few
    assert not shared_stretches(windows, stretch=20, both_strands=False)[3, 4]
    groups = overlap_groups(windows, stretch=20)
    assert groups[0] == groups[1] == groups[2]  # a chain is one stretch of genome
    assert groups[3] == groups[4]
    assert len(set(groups[[0, 3, 5, 6]])) == 4
    with pytest.raises(ValueError, match="stretch must be >= 1"):
        shared_stretches(windows, stretch=0)
