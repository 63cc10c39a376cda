"""Each step runs from the command line; bad input fails clearly and leaves no output."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import minimal_experiment
from conftest import run_cli as scicontrast


def write_config(folder: Path, **adapter_params) -> Path:
    params = {"window": 20, **adapter_params}
    experiment = minimal_experiment(adapter={"name": "dna_fasta", "params": params})
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"experiments": {"exp": experiment}}))
    return path


def prepare(folder: Path, **adapter_params) -> tuple[SimpleNamespace, Path]:
    out = folder / "items"
    return scicontrast(
        "prepare", "--config", write_config(folder, **adapter_params), "--out", out
    ), out


def test_prepare_and_pairs_write_inspectable_tables(tmp_path):
    fasta = tmp_path / "seqs.fa.gz"
    with gzip.open(fasta, "wt") as handle:
        handle.write(">a\n" + "ACGT" * 10 + "\n>b\n" + "GGCCA" * 8 + "\n")
    result, items = prepare(tmp_path, paths=[str(fasta)])
    assert result.returncode == 0, result.stderr
    pairs = tmp_path / "pairs.parquet"
    result = scicontrast(
        "pairs", "--config", tmp_path / "config.yaml", "--items", items, "--out", pairs
    )
    assert result.returncode == 0, result.stderr
    import pandas as pd

    table = pd.read_parquet(pairs)
    assert set(table["view"]) == {"forward", "reverse_complement"}
    assert table["group_id"].nunique() == len(pd.read_parquet(items / "items.parquet"))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (">ok\n" + "ACGT" * 10 + "\n>bad\nACGTACGTAC1GTACGTACGTACGT\n", "bad"),
        ("", "no records"),
        (">short\nACGT\n", "short"),
        ("ACGT\n>a\nACGT\n", "bad.fa"),
    ],
    ids=["invalid-character", "empty-file", "shorter-than-window", "text-before-header"],
)
def test_bad_fasta_is_named_and_leaves_nothing(tmp_path, content, expected):
    fasta = tmp_path / "bad.fa"
    fasta.write_text(content)
    result, out = prepare(tmp_path, paths=[str(fasta)])
    assert result.returncode == 2
    assert "bad.fa" in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert set(tmp_path.iterdir()) == {fasta, tmp_path / "config.yaml"}


def test_unknown_adapter_names_the_key(tmp_path):
    config = tmp_path / "config.yaml"
    experiment = minimal_experiment(adapter={"name": "genbank_please"})
    config.write_text(yaml.safe_dump({"experiments": {"exp": experiment}}))
    out = tmp_path / "items"
    result = scicontrast("prepare", "--config", config, "--out", out)
    assert result.returncode == 2
    assert "experiments.exp.adapter: unknown adapter 'genbank_please'" in result.stderr
    assert not out.exists()


def test_bad_config_in_resolve_config_writes_nothing(tmp_path):
    config = tmp_path / "config.yaml"
    experiment = minimal_experiment(training={"lr": "fast"})
    config.write_text(yaml.safe_dump({"experiments": {"exp": experiment}}))
    out = tmp_path / "resolved.json"
    result = scicontrast("resolve-config", "--config", config, "--out", out)
    assert result.returncode == 2
    assert (
        "config.yaml: experiments.exp.training.lr: 'fast' is not of type 'number'" in result.stderr
    )
    assert not out.exists()


def test_resolve_config_fills_defaults(tmp_path):
    config = write_config(tmp_path, paths=["x.fa"])
    out = tmp_path / "resolved.json"
    result = scicontrast("resolve-config", "--config", config, "--out", out)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(out.read_text())
    assert resolved["experiments"]["exp"]["training"]["epochs"] == 10


def test_demo_options_are_the_schema_keys_and_take_its_defaults():
    from scicontrast.cli.commands import demo_settings
    from scicontrast.cli.parsers import DEMO_OPTIONS, build_parser
    from scicontrast.config import load_schema

    sections = load_schema()["properties"]["demo_data"]["properties"]
    keys = {key for section in sections.values() for key in section["properties"]}
    options = {option[2:].replace("-", "_") for option, _, _ in DEMO_OPTIONS}
    assert options == keys - {"out_dir"}
    parser = build_parser()
    for domain in ("dna", "graph", "grains", "audio-image", "genomes"):
        defaults = sections[domain.replace("-", "_")]["properties"]
        settings = demo_settings(parser.parse_args(["demo-data", domain, "--out", "x"]))
        assert settings == {k: v["default"] for k, v in defaults.items() if k != "out_dir"}
    given = parser.parse_args(["demo-data", "dna", "--out", "x", "--length", "40"])
    assert demo_settings(given)["length"] == 40 and demo_settings(given)["sources"] == 4


def test_the_demo_generators_defaults_are_the_schemas():
    """The generators keep keyword defaults for library use; they may not drift."""
    import inspect

    from scicontrast.config import load_schema
    from scicontrast.data_adapters.audio_image.demo import generate_demo_audio_image
    from scicontrast.data_adapters.dna.demo import generate_demo_dna
    from scicontrast.data_adapters.dna.demo_genomes import generate_demo_genomes
    from scicontrast.data_adapters.grains.demo import generate_demo_grains
    from scicontrast.data_adapters.graphs.demo import generate_demo_graph

    sections = load_schema()["properties"]["demo_data"]["properties"]
    generators = {
        "dna": generate_demo_dna,
        "genomes": generate_demo_genomes,
        "graph": generate_demo_graph,
        "grains": generate_demo_grains,
        "audio_image": generate_demo_audio_image,
    }
    for domain, generate in generators.items():
        parameters = inspect.signature(generate).parameters
        for key, spec in sections[domain]["properties"].items():
            if key != "out_dir":
                assert parameters[key].default == spec["default"], (domain, key)
