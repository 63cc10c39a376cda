"""Component registries: built-ins, `module:Class` paths and entry points of other packages."""

import sys
import textwrap

import pytest

from scicontrast.errors import UnknownComponentError
from scicontrast.registry import ADAPTERS, ENCODERS, PAIR_BUILDERS, Registry


def test_builtins_resolve():
    assert "dna_fasta" in ADAPTERS.names()
    assert "dna_views" in PAIR_BUILDERS.names()
    assert "dna_cnn" in ENCODERS.names()


def test_unknown_name_lists_known_names_and_names_the_key():
    with pytest.raises(UnknownComponentError) as info:
        ADAPTERS.create({"name": "dna_fastq_typo"}, where="experiments.x.adapter")
    message = str(info.value)
    assert message.startswith("experiments.x.adapter: unknown adapter 'dna_fastq_typo'")
    assert "dna_fasta" in message


def test_module_path(tmp_path, monkeypatch):
    (tmp_path / "lab_code.py").write_text(
        "class Thing:\n    def __init__(self, size=1):\n        self.size = size\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("thing", "scicontrast.test_things", [])
    assert registry.create({"name": "lab_code:Thing", "params": {"size": 3}}).size == 3
    with pytest.raises(UnknownComponentError, match="has no 'Missing'"):
        registry.get("lab_code:Missing")
    with pytest.raises(UnknownComponentError, match="cannot import module 'no_such_lab'"):
        registry.get("no_such_lab:Thing")
    with pytest.raises(UnknownComponentError, match="bad params"):
        registry.create({"name": "lab_code:Thing", "params": {"colour": "red"}})


def test_entry_point_of_an_installed_package(tmp_path, monkeypatch):
    """A package installed beside scicontrast registers an adapter through its metadata."""
    (tmp_path / "lab_adapters.py").write_text(
        textwrap.dedent(
            """
            class PlateReader:
                def __init__(self, wells=96):
                    self.wells = wells
            """
        )
    )
    dist_info = tmp_path / "lab_adapters-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-adapters\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[scicontrast.adapters]\nplate_reader = lab_adapters:PlateReader\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("lab_adapters", None)
    assert "plate_reader" in ADAPTERS.names()
    assert ADAPTERS.create({"name": "plate_reader", "params": {"wells": 384}}).wells == 384


@pytest.mark.parametrize(
    "body, cause",
    [
        ("raise RuntimeError('licence file missing')", "RuntimeError: licence file missing"),
        ("def broken(:\n", "SyntaxError"),
        ("import no_such_dependency_xyz", "ModuleNotFoundError"),
    ],
)
def test_plugin_import_failure_of_any_kind_names_the_component(tmp_path, monkeypatch, body, cause):
    """A `module:Class` whose import raises anything is an UnknownComponentError with the cause."""
    (tmp_path / "lab_broken.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("lab_broken", None)
    registry = Registry("thing", "scicontrast.test_things", [])
    with pytest.raises(UnknownComponentError) as info:
        registry.create({"name": "lab_broken:Thing"}, where="experiments.x.encoder")
    message = str(info.value)
    assert message.startswith("experiments.x.encoder: thing 'lab_broken:Thing'")
    assert "cannot import module 'lab_broken'" in message and cause in message


def test_entry_point_whose_import_fails_names_the_entry_point(tmp_path, monkeypatch):
    (tmp_path / "lab_plate.py").write_text("raise ValueError('needs a calibration file')\n")
    dist_info = tmp_path / "lab_plate-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-plate\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[scicontrast.adapters]\nbroken_plate = lab_plate:PlateReader\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("lab_plate", None)
    with pytest.raises(UnknownComponentError) as info:
        ADAPTERS.create({"name": "broken_plate"}, where="experiments.x.adapter")
    message = str(info.value)
    assert "experiments.x.adapter: adapter 'broken_plate': entry point" in message
    assert "'lab_plate:PlateReader'" in message
    assert "ValueError: needs a calibration file" in message
