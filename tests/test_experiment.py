"""The typed experiment: its fields are the schema's keys, and its values the filled dict's."""

from __future__ import annotations

import copy
import dataclasses
import typing

import pytest
from conftest import REPO, minimal_experiment

from scicontrast.config import load_experiment, load_schema, select_experiment, validate_config
from scicontrast.errors import ConfigError
from scicontrast.experiment import Experiment, section


def schema_keys(node: dict, defs: dict) -> dict:
    """Key -> sub-tree of keys (``None`` for a leaf) of an object in the schema."""
    if "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[1]]
    return {
        key: schema_keys(child, defs) if child.get("type") == "object" or "$ref" in child else None
        for key, child in node.get("properties", {}).items()
    }


def field_keys(cls: type) -> dict:
    """The same tree from the dataclasses."""
    hints = {name: section(hint) for name, hint in typing.get_type_hints(cls).items()}
    return {
        field.name: field_keys(hints[field.name])
        if dataclasses.is_dataclass(hints[field.name])
        else None
        for field in dataclasses.fields(cls)
    }


def test_every_schema_key_has_a_field_and_every_field_a_key():
    schema = load_schema()
    from_schema = schema_keys(schema["$defs"]["experiment"], schema["$defs"])
    # A component's params are the component's own dict; the schema leaves them open.
    for component in ("adapter", "pairs", "encoder"):
        from_schema[component]["params"] = None
    assert field_keys(Experiment) == {"name": None, **from_schema}


def test_values_are_the_validated_dicts():
    settings = load_experiment(REPO / "config.yaml", "dna_demo")
    experiment = Experiment.from_dict(settings)
    assert experiment.name == "dna_demo"
    assert experiment.training.seed == settings["training"]["seed"]
    assert experiment.analysis.probe_seeds == settings["analysis"]["probe_seeds"]
    assert experiment.pairs.name == settings["pairs"]["name"]
    assert experiment.adapter.params == settings["adapter"]["params"]
    # The optional federated section is None for an experiment without it.
    assert dataclasses.asdict(experiment) == {**settings, "federated": None}
    # to_dict is from_dict's inverse: an absent optional section stays absent, so the dict
    # validates again (an ensemble member is trained from it).
    assert experiment.to_dict() == settings
    assert Experiment.from_dict(experiment.to_dict()) == experiment


def test_replace_changes_only_the_named_keys_and_leaves_the_original():
    experiment = Experiment.from_dict(load_experiment(REPO / "config.yaml", "dna_demo"))
    changed = experiment.replace(training={"seed": 7, "epochs": 1}, description="other")
    assert (changed.training.seed, changed.training.epochs, changed.description) == (7, 1, "other")
    expected = copy.deepcopy(experiment.to_dict())
    expected["training"].update(seed=7, epochs=1)
    expected["description"] = "other"
    assert changed.to_dict() == expected
    assert experiment.training.seed != 7  # frozen: the original is another object
    with pytest.raises(TypeError):
        experiment.replace(training={"no_such_key": 1})


def test_defaults_come_from_the_schema():
    config = validate_config({"experiments": {"a": minimal_experiment()}})
    experiment = Experiment.from_dict(select_experiment(config, "a", "test"))
    assert experiment.training.epochs == 10 and experiment.loss.temperature == 0.1
    assert experiment.analysis.label_column is None and experiment.head.output_dim == 64


def test_an_unvalidated_dict_is_named_and_a_key_without_a_field_left_out():
    config = validate_config({"experiments": {"a": minimal_experiment()}})
    settings = copy.deepcopy(select_experiment(config, "a", "test"))
    del settings["training"]["lr"]
    with pytest.raises(ConfigError, match=r"experiments\.a\.training: missing \['lr'\]"):
        Experiment.from_dict(settings)
    settings = copy.deepcopy(select_experiment(config, "a", "test"))
    settings["analysis"]["new_key"] = 1
    # A key another branch added to the schema without a field here is ignored at run time
    # (the first test of this file fails until the field is added).
    assert not hasattr(Experiment.from_dict(settings).analysis, "new_key")
