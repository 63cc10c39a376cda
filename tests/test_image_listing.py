"""The image file list as one Arrow array, and the labels table matched to it by lookups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from scicontrast.data_adapters.images.listing import expand_image_paths
from scicontrast.data_adapters.labels import match_table_to_files
from scicontrast.errors import InputDataError


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_listing_equals_the_path_listing(tmp_path, monkeypatch):
    names = ["b.png", "a.PNG", "a-1.png", "a.png", ".png", ".hidden.tif", "c.txt", "d.jpeg"]
    _touch(*(tmp_path / "f" / n for n in names), tmp_path / "f" / "sub" / "e.png")
    (tmp_path / "f" / "folder.png").mkdir()
    monkeypatch.chdir(tmp_path)
    entries = ["f", "./f/", "f/*.png", "f/sub/e.png", "missing/x.png"]
    files = expand_image_paths(entries)
    in_folder = sorted(Path("f") / n for n in names if n not in (".png", "c.txt"))
    expected = [*in_folder, Path("f/sub/e.png"), Path("missing/x.png")]
    assert list(files) == expected  # repeats kept at their first place
    assert isinstance(files.strings, pa.Array) and files.strings.type == pa.large_string()
    assert files[-1] == Path("missing/x.png") and list(files[1:3]) == expected[1:3]
    absolute = expand_image_paths(str(tmp_path / "f"))
    assert list(absolute) == [tmp_path / p for p in expected[:6]]


def test_names_and_stems_are_the_path_parts(tmp_path):
    paths = ["a/x.tar.png", "b/.hidden.png", "c.d/e.jpg", "f/g.h.TIF"]
    files = expand_image_paths([str(tmp_path / p) for p in paths])
    assert files.names().to_pylist() == [Path(p).name for p in paths]
    assert files.stems().to_pylist() == [Path(p).stem for p in paths]


def test_labels_match_relative_paths_names_and_stems_in_that_order(tmp_path):
    root = tmp_path / "data"
    images = [
        root / "d1" / "x.png",
        root / "d2" / "x.png",
        root / "d1" / "y.png",
        root / "s" / "z.tif",
    ]
    _touch(*images)
    (tmp_path / "link").symlink_to(root)
    files = expand_image_paths([str(p) for p in images])
    table = pd.DataFrame(
        {
            "file": [
                "d2/../d1/x.png",  # relative to the table's folder, through a link
                "x.png",  # a name two files share: names none
                "y",  # a stem
                str(images[1]),  # as listed
                "z.tif",  # a name (not in the table's folder)
                "ghost.png",
            ]
        }
    )
    rows, unmatched = match_table_to_files(table, "file", files, tmp_path / "link" / "t.csv")
    assert rows.tolist() == [0, 3, 2, 4]
    assert unmatched == ["x.png", "ghost.png"]


def test_two_rows_naming_one_file_name_both_rows(tmp_path):
    _touch(tmp_path / "a.png", tmp_path / "b.png")
    files = expand_image_paths(str(tmp_path))
    table = pd.DataFrame({"file": ["b.png", "a.png", "c.png", "b"]})
    with pytest.raises(InputDataError, match=r"t.csv: rows 1 and 4 both name file .*b.png"):
        match_table_to_files(table, "file", files, tmp_path / "t.csv")
    empty = match_table_to_files(table.iloc[:0], "file", files, tmp_path / "t.csv")
    assert np.array_equal(empty[0], [-1, -1]) and empty[1] == []
