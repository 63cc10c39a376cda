"""Adapters read in chunks: the items set does not depend on the chunk size (issue 26 item 1)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from skimage import io as skio

from scicontrast.data_adapters.base import Adapter, Items
from scicontrast.data_adapters.chunks import write_chunks
from scicontrast.errors import InputDataError
from scicontrast.registry import ADAPTERS


def _inputs(folder: Path) -> dict[str, dict]:
    """Two FASTA files sharing a record id, a short and an ambiguous record, a labels table
    whose first record has no row; grey and colour PNGs of several sizes."""
    rng = np.random.default_rng(0)

    def sequence(n: int) -> str:
        return "".join(rng.choice(list("ACGT"), n))

    first = {f"r{i}": sequence(int(rng.integers(30, 300))) for i in range(12)}
    first |= {"amb": "N" * 60 + sequence(120), "short": sequence(10)}
    second = {"r3": sequence(150), "s0": sequence(90), "s1": sequence(200)}
    for name, records in (("a.fa", first), ("b.fa", second)):
        (folder / name).write_text("".join(f">{k}\n{v}\n" for k, v in records.items()))
    labelled = [*[r for r in first if r != "r0"][::2], "nowhere"]
    pd.DataFrame({"record_id": labelled, "kind": "x"}).to_csv(folder / "labels.csv", index=False)
    images = folder / "img"
    images.mkdir()
    for i in range(7):
        shape = (int(rng.integers(40, 80)), int(rng.integers(40, 80)))
        pixels = rng.integers(0, 255, (*shape, 3) if i == 4 else shape, dtype=np.uint8)
        skio.imsave(images / f"g{i}_{'ab'[i % 2]}.png", pixels, check_contrast=False)
    fasta = [str(folder / "a.fa"), str(folder / "b.fa")]
    dna = {"paths": fasta, "window": 50, "stride": 30, "flank": 5, "short_sequences": "pad"}
    return {
        "dna": {"name": "dna_fasta", "params": dna},
        "dna_labels": {
            "name": "dna_fasta",
            "params": dna | {"labels": str(folder / "labels.csv"), "labels_missing": "allow"},
        },
        "crop": {
            "name": "image_folder",
            "params": {
                "paths": [str(images)],
                "size": 32,
                "label_from_filename": r"_(?P<label>[ab])\.png$",
            },
        },
        "fit_grey": {
            "name": "image_folder",
            "params": {"paths": [str(images)], "size": 32, "resize": "fit", "grayscale": True},
        },
        "tiles": {
            "name": "image_folder",
            "params": {"paths": [str(images)], "size": 16, "tiles": 3},
        },
        "patches": {
            "name": "image_folder",
            "params": {
                "paths": [str(images)],
                "patch_size": 16,
                "label_from_filename": "_(?P<label>[ab])",
            },
        },
        "patches_scaled": {
            "name": "image_folder",
            "params": {
                "paths": [str(images)],
                "patch_size": 12,
                "pixel_size_um": 0.5,
                "target_pixel_size_um": 0.8,
            },
        },
    }


def _assert_same(a: Items, b: Items) -> None:
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.meta == b.meta
    for kind in ("arrays", "extras"):
        ours, theirs = getattr(a, kind), getattr(b, kind)
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert ours[name].dtype == theirs[name].dtype
            assert np.array_equal(ours[name], theirs[name])


CASES = ["dna", "dna_labels", "crop", "fit_grey", "tiles", "patches", "patches_scaled"]


@pytest.mark.parametrize("case", CASES)
def test_chunked_prepare_equals_the_whole_read_for_any_chunk_size(tmp_path, case):
    spec = _inputs(tmp_path)[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapter = ADAPTERS.create(spec, where=case)
        adapter.read().save(tmp_path / "whole")
        whole = Items.load(tmp_path / "whole")
        for chunk_rows in (1, 3, len(whole)):
            folder = tmp_path / f"chunks{chunk_rows}"
            rows = write_chunks(adapter.read_chunks(chunk_rows), folder)
            assert rows == len(whole)
            # each chunk is its own row group: the set was written as it was read
            groups = pq.ParquetFile(folder / "items.parquet").num_row_groups
            assert groups > 1 if chunk_rows < len(whole) - 1 else groups == 1
            _assert_same(whole, Items.load(folder))


def test_shared_record_ids_get_the_file_prefix_in_every_chunk(tmp_path):
    spec = _inputs(tmp_path)["dna"]
    write_chunks(ADAPTERS.create(spec, where="dna").read_chunks(1), tmp_path / "out")
    ids = Items.load(tmp_path / "out").table["item_id"]
    assert ids.str.startswith("a/r3:").any() and ids.str.startswith("b/r3:").any()
    assert not ids.str.startswith("r3:").any()


def test_a_bad_record_after_the_first_chunk_leaves_no_folder(tmp_path):
    good = "".join(f">r{i}\n{'ACGT' * 30}\n" for i in range(20))
    (tmp_path / "bad.fa").write_text(good + ">broken\nACGTXX\n")
    adapter = ADAPTERS.create(
        {"name": "dna_fasta", "params": {"paths": [str(tmp_path / "bad.fa")], "window": 40}},
        where="bad",
    )
    with pytest.raises(InputDataError, match=r"bad\.fa: record 'broken'"):
        write_chunks(adapter.read_chunks(3), tmp_path / "items")
    assert not (tmp_path / "items").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.fa"]


class _WholeTable(Adapter):
    """A plug-in that only implements ``read``, returning today's whole set."""

    def input_files(self) -> list[Path]:
        return []

    def read(self) -> Items:
        table = pd.DataFrame({"item_id": ["a", "b", "c"], "value": [1.0, 2.0, 3.0]})
        return Items(table, meta={"modality": "toy"}, arrays={"x": np.eye(3)})


def test_an_adapter_with_only_read_is_written_as_one_chunk(tmp_path):
    assert write_chunks(_WholeTable().read_chunks(1), tmp_path / "items") == 3
    _assert_same(_WholeTable().read(), Items.load(tmp_path / "items"))


def test_a_small_image_after_the_first_patch_chunk_is_named_and_leaves_no_folder(tmp_path):
    spec = _inputs(tmp_path)["patches"]
    skio.imsave(tmp_path / "img" / "z_small.png", np.zeros((9, 30), np.uint8), check_contrast=False)
    adapter = ADAPTERS.create(spec, where="patches")
    with pytest.raises(InputDataError, match=r"z_small\.png: image is 9 x 30 pixels"):
        write_chunks(adapter.read_chunks(2), tmp_path / "items")
    assert not (tmp_path / "items").exists()


def _audio_image(tmp_path: Path) -> tuple[dict, dict]:
    """The synchronised demo's adapter spec, and one reading its files one by one."""
    from test_export import audio_image_components

    spec = audio_image_components(tmp_path)["adapter"]
    files = sorted(str(p) for p in (tmp_path / "demo").rglob("*") if p.suffix in (".wav", ".png"))
    params = {k: v for k, v in spec["params"].items() if k != "synchronization"}
    mixed = files[:5] + files[-4:]  # audio clips and images, interleaved by name
    return spec, {"name": "audio_image", "params": params | {"files": mixed}}


def test_audio_image_events_in_chunks_equal_the_whole_read(tmp_path):
    for spec in _audio_image(tmp_path):
        adapter = ADAPTERS.create(spec, where="audio_image")
        adapter.read().save(tmp_path / "whole")
        whole = Items.load(tmp_path / "whole")
        for chunk_rows in (1, 3, len(whole)):
            folder = tmp_path / f"chunks{chunk_rows}"
            assert write_chunks(adapter.read_chunks(chunk_rows), folder) == len(whole)
            _assert_same(whole, Items.load(folder))
        for path in (tmp_path / "whole", *tmp_path.glob("chunks*")):
            shutil.rmtree(path)


def test_a_broken_clip_in_a_later_chunk_is_named_and_leaves_no_folder(tmp_path):
    spec, _ = _audio_image(tmp_path)
    pairs = pd.read_parquet(tmp_path / "sync" / "pairs.parquet")
    broken = pairs.iloc[-1]
    Path(broken["audio_file"]).write_bytes(b"garbage" * 20)
    adapter = ADAPTERS.create(spec, where="audio_image")
    where = rf"row {broken['audio_row']}: .*{Path(broken['audio_file']).name}: cannot read audio"
    with pytest.raises(InputDataError, match=where):
        write_chunks(adapter.read_chunks(2), tmp_path / "items")
    assert not (tmp_path / "items").exists()
