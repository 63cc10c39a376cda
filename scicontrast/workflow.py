"""Helpers the Snakefile calls at parse time, kept here so they are plain, tested Python.

Snakemake only wires files together; everything it needs to know about an experiment
(which raw files the adapter reads, whether the named components exist) is answered here.
"""

from __future__ import annotations

import json
from typing import Any

from scicontrast.config import experiment_as_config, select_experiment
from scicontrast.experiment import Experiment
from scicontrast.registry import ADAPTERS, ENCODERS, PAIR_BUILDERS


def check_components(config: dict[str, Any]) -> None:
    """Resolve every experiment's adapter, pair builder and encoder; fail naming the key.

    Called when the workflow is parsed, so a typo fails before any job runs.
    """
    for name in config["experiments"]:
        experiment = Experiment.from_dict(select_experiment(config, name, "config"))
        ADAPTERS.create(experiment.adapter, where=f"experiments.{name}.adapter")
        PAIR_BUILDERS.create(experiment.pairs, where=f"experiments.{name}.pairs")
        ENCODERS.create(experiment.encoder, where=f"experiments.{name}.encoder")


def adapter_inputs(config: dict[str, Any], experiment: str) -> list[str]:
    """The raw files the experiment's adapter reads (the prepare rule's inputs)."""
    spec = Experiment.from_dict(select_experiment(config, experiment, "config")).adapter
    adapter = ADAPTERS.create(spec, where=f"experiments.{experiment}.adapter")
    return [str(path) for path in adapter.input_files()]


def experiment_json(config: dict[str, Any], experiment: str) -> str:
    """One experiment as a complete config (JSON), the input of ``scicontrast resolve-config``.

    Passing it as a rule parameter makes Snakemake rerun an experiment whose settings changed.
    """
    selected = select_experiment(config, experiment, "config")
    return json.dumps(experiment_as_config(selected), sort_keys=True)
