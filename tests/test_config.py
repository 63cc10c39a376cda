"""The config schema: defaults are filled, and a wrong key or type is named."""

import json
import re

import pytest
import yaml
from conftest import REPO, minimal_experiment

from scicontrast.config import (
    experiment_as_config,
    load_experiment,
    read_config_file,
    validate_config,
)
from scicontrast.errors import ConfigError


def test_defaults_are_filled_and_not_shared():
    config = validate_config(
        {"experiments": {"a": minimal_experiment(), "b": minimal_experiment()}}
    )
    training = config["experiments"]["a"]["training"]
    assert training["epochs"] == 10 and training["device"] == "auto"
    assert config["experiments"]["a"]["loss"] == {
        "name": "nt_xent",
        "temperature": 0.1,
        "learnable_temperature": False,
        "implementation": "dense",
        "queue_size": 0,
        "momentum": 0.999,
    }
    assert config["experiments"]["a"]["analysis"]["probe_class_weight"] is None
    assert config["experiments"]["a"]["analysis"]["probe_group_column"] is None
    config["experiments"]["a"]["analysis"]["probe_seeds"].append(99)
    assert config["experiments"]["b"]["analysis"]["probe_seeds"] == [0, 1, 2, 3, 4]


def test_validation_does_not_modify_the_input():
    raw = {"experiments": {"a": minimal_experiment()}}
    before = json.dumps(raw, sort_keys=True)
    validate_config(raw)
    assert json.dumps(raw, sort_keys=True) == before


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"training": {"epochs": "ten"}}, "experiments.a.training.epochs: 'ten' is not of type"),
        ({"trainig": {}}, "'trainig' was unexpected"),
        ({"training": {"device": "tpu"}}, "experiments.a.training.device"),
        ({"loss": {"temperature": 0}}, "experiments.a.loss.temperature"),
        ({"training": {"batch_size": 1}}, "experiments.a.training.batch_size"),
        ({"analysis": {"probe_scaling": "l1"}}, "experiments.a.analysis.probe_scaling"),
        ({"analysis": {"probe_class_weight": "inverse"}}, "analysis.probe_class_weight"),
        ({"analysis": {"probe_group_column": 3}}, "analysis.probe_group_column"),
        ({"adapter": {"params": {}}}, "'name' is a required property"),
    ],
)
def test_bad_config_names_file_and_key(patch, expected):
    experiment = minimal_experiment()
    experiment.update(patch)
    with pytest.raises(ConfigError) as info:
        validate_config({"experiments": {"a": experiment}}, source="my.yaml")
    assert str(info.value).startswith("my.yaml: ")
    assert expected in str(info.value)


def test_unknown_top_level_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match="allowed keys here: demo_data, experiments"):
        validate_config({"experiments": {"a": minimal_experiment()}, "experiment": {}})


def test_experiment_selection(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump({"experiments": {"a": minimal_experiment(), "b": minimal_experiment()}})
    )
    assert load_experiment(path, "b")["name"] == "b"
    with pytest.raises(ConfigError, match=r"choose one with --experiment"):
        load_experiment(path)
    with pytest.raises(ConfigError, match=r"no experiment 'c'; declared: a, b"):
        load_experiment(path, "c")


def test_resolved_single_experiment_roundtrips(tmp_path):
    experiment = validate_config({"experiments": {"a": minimal_experiment()}})
    selected = {"name": "a", **experiment["experiments"]["a"]}
    path = tmp_path / "resolved.json"
    path.write_text(json.dumps(experiment_as_config(selected)))
    assert load_experiment(path) == selected


def test_small_floats_survive_the_json_roundtrip(tmp_path):
    # json.dumps writes 1e-05, which a YAML 1.1 reader would take for a string.
    experiment = minimal_experiment()
    experiment["training"] = {"weight_decay": 0.00001}
    config = validate_config({"experiments": {"a": experiment}})
    path = tmp_path / "resolved.json"
    path.write_text(json.dumps(config))
    assert "1e-05" in path.read_text()
    assert read_config_file(path)["experiments"]["a"]["training"]["weight_decay"] == 1e-05


def test_exponent_without_decimal_point_gets_a_hint(tmp_path):
    path = tmp_path / "config.yaml"
    experiment = minimal_experiment()
    experiment["training"] = {"weight_decay": "PLACEHOLDER"}
    path.write_text(
        yaml.safe_dump({"experiments": {"a": experiment}}).replace("PLACEHOLDER", "1e-5")
    )
    with pytest.raises(ConfigError, match=r"weight_decay: '1e-5' is not of type 'number'.*1.0e-05"):
        read_config_file(path)


@pytest.mark.parametrize("text", ["1e-5", "1e6", "1.0e6", "1.0e38", "2.5E3", "1e+6"])
def test_exponent_hint_is_a_spelling_yaml_reads_as_the_same_number(tmp_path, text):
    """PyYAML reads ``1.0e6`` as text too (the exponent needs a sign); the hint must parse."""
    path = tmp_path / "config.yaml"
    experiment = minimal_experiment()
    experiment["training"] = {"lr": "PLACEHOLDER"}
    path.write_text(yaml.safe_dump({"experiments": {"a": experiment}}).replace("PLACEHOLDER", text))
    with pytest.raises(ConfigError, match=r"training\.lr: .* write (\S+)$") as info:
        read_config_file(path)
    hint = info.value.args[0].rsplit(" ", 1)[1]
    assert yaml.safe_load(f"lr: {hint}")["lr"] == float(text)


def test_unreadable_config_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        read_config_file(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiments: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        read_config_file(broken)


def test_shipped_config_is_valid():
    config = read_config_file(REPO / "config.yaml")
    assert "dna_demo" in config["experiments"]


BENCHMARK_CONFIGS = sorted((REPO / "benchmarks").glob("*.yaml")) + sorted(
    (REPO / "benchmarks" / "searches").glob("*.yaml")
)


@pytest.mark.parametrize(
    "path", BENCHMARK_CONFIGS, ids=lambda path: str(path.relative_to(REPO / "benchmarks"))
)
def test_every_benchmark_config_validates(path):
    """The commands in BENCHMARKS.md and docs/experiments/ run these files (reference configs
    in benchmarks/, searches, seeds and ablations in benchmarks/searches/): a renamed or
    retyped key must fail here, not hours into a benchmark."""
    config = validate_config(read_config_file(path))
    assert config["experiments"]


def test_every_config_the_docs_name_exists():
    """BENCHMARKS.md, the README and docs/ name configs by path in their commands: a moved or
    renamed config must fail here, not in a reader's shell."""
    pages = [REPO / "BENCHMARKS.md", REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    named = {
        (page.relative_to(REPO), path)
        for page in pages
        for path in re.findall(r"benchmarks/[\w/]+\.yaml", page.read_text())
    }
    assert named, "no config named in the docs: the pattern is stale"
    missing = sorted(f"{page}: {path}" for page, path in named if not (REPO / path).is_file())
    assert not missing, missing
