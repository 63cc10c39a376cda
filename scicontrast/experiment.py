"""The experiment as typed objects: one dataclass per section of the schema's experiment.

The schema (``schemas/config.schema.yaml``) declares every key with its default and
:func:`~scicontrast.config.validate_config` fills them in; :meth:`Experiment.from_dict` then
turns the filled dict into these objects, field by field, so the dataclasses hold no
defaults of their own: one place says what a key defaults to. Adding a key to a section is
its schema entry plus one line here: ``tests/test_experiment.py`` fails until the two agree.
The dict form (:meth:`Experiment.to_dict`) is what a model file stores and what the
checkpoint's config hash is taken over. A component's ``params`` stay a dict: they belong
to the component (a plug-in's keyword arguments), which checks them itself.

    experiment = Experiment.from_dict(load_experiment("config.yaml", "dna_demo"))
    experiment.training.seed, experiment.analysis.label_column, experiment.pairs.name
    shorter = experiment.replace(training={"epochs": 2})
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from scicontrast.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Component:
    """A registry name (or ``package.module:Class``) and the component's keyword arguments."""

    name: str
    params: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Head:
    """The projection head the loss sees (embeddings come from the encoder)."""

    hidden_dim: int
    output_dim: int


@dataclasses.dataclass(frozen=True)
class Loss:
    """InfoNCE's form, temperature and implementation (schema: ``loss``)."""

    name: str
    temperature: float
    learnable_temperature: bool
    implementation: str
    queue_size: int
    momentum: float


@dataclasses.dataclass(frozen=True)
class Training:
    """The optimisation and the hold-out (schema: ``training``)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    lr_schedule: str
    warmup_epochs: float
    swa_epochs: int
    ensemble: int
    seed: int
    holdout_fraction: float
    device: str
    grad_cache_views: int
    gpus: int
    gpu_model: str | None
    loader_workers: int | None
    augment_on_device: bool
    checkpoint_every: int
    checkpoint_seconds: float
    heldout_every: int
    heldout_min_steps: int
    max_steps_per_epoch: int | None


@dataclasses.dataclass(frozen=True)
class Analysis:
    """Clustering, probes, baselines and diagnostics settings (schema: ``analysis``)."""

    label_column: str | None
    kmeans_clusters: int | None
    cluster_methods: list[str]
    leiden_resolution: float
    leiden_neighbors: int
    embed_shards: int
    cluster_exact_max_items: int
    leiden_sample_items: int | None
    hdbscan_min_cluster_size: int
    hdbscan_pca_components: int | None
    probe_test_fraction: float
    genome_reads: int
    genome_read_lengths: list[int]
    probe_scaling: str
    probe_class_weight: str | None
    probe_group_column: str | None
    probe_seeds: list[int]
    knn_k: int
    baselines: bool
    untrained_control: bool
    invariance_negatives: int
    diagnostics_max_groups: int
    gaussianity_projections: int
    map_max_points: int


@dataclasses.dataclass(frozen=True)
class Bank:
    """The global negative bank of federated training (schema: ``federated.bank``)."""

    enabled: bool
    size: int
    share_per_site: int
    refresh_every: int
    noise_std: float


@dataclasses.dataclass(frozen=True)
class Server:
    """The server optimiser of federated training (schema: ``federated.server``)."""

    learning_rate: float | None
    momentum: float
    beta_1: float
    beta_2: float
    tau: float


@dataclasses.dataclass(frozen=True)
class Federated:
    """Sites, rounds and aggregation of federated training (schema: ``federated``)."""

    split_by: str | None
    sites: list[dict[str, Any]]
    rounds: int
    local_epochs: int
    aggregation: str
    proximal_mu: float
    server: Server
    min_sites: int
    batch_norm: str
    bank: Bank


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One validated experiment: its name and every section, defaults filled."""

    name: str
    description: str
    adapter: Component
    pairs: Component
    encoder: Component
    head: Head
    loss: Loss
    training: Training
    analysis: Analysis
    # The one optional section: an experiment without it trains centrally.
    federated: Federated | None = None

    @classmethod
    def from_dict(cls, experiment: Mapping[str, Any]) -> Experiment:
        """The typed form of a validated experiment (``load_experiment``'s dict).

        Raises:
            ConfigError: a field's key is missing: the dict was not validated, which fills
                every default.
        """
        return build(cls, experiment, f"experiments.{experiment.get('name', '?')}")

    def federated_section(self) -> Federated:
        """The ``federated`` section; ``ConfigError`` naming the experiment without one."""
        if self.federated is None:
            raise ConfigError(f"experiments.{self.name}: no federated section")
        return self.federated

    def replace(self, **changes: Any) -> Experiment:
        """A copy with some keys of some sections changed, the rest kept:
        ``experiment.replace(training={"seed": 1, "epochs": 5}, description="...")``; a
        section's mapping changes only the keys it names."""
        changed = {
            name: (
                dataclasses.replace(getattr(self, name), **value)
                if dataclasses.is_dataclass(getattr(self, name))
                else value
            )
            for name, value in changes.items()
        }
        return dataclasses.replace(self, **changed)

    def to_dict(self) -> dict[str, Any]:
        """The dict form :meth:`from_dict` reads (and the model file stores): every field,
        without the optional sections the experiment does not have."""
        optional = {f.name for f in dataclasses.fields(self) if f.default is None}
        return {
            name: value
            for name, value in dataclasses.asdict(self).items()
            if not (value is None and name in optional)
        }


def section(hint: Any) -> Any:
    """The dataclass of an optional section's hint (``Federated | None``), else the hint."""
    members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return members[0] if len(members) == 1 and dataclasses.is_dataclass(members[0]) else hint


def build(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """``cls(**values)`` for the keys that are fields of ``cls``, building the fields that
    are dataclasses from their sub-dicts.

    ``where`` is the key path of ``values`` in the config, for error messages.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    hints = {name: section(hint) for name, hint in typing.get_type_hints(cls).items()}
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    optional = {f.name for f in fields if f.default is None}
    names = [f.name for f in fields if f.name in values or f.name not in optional]
    missing = [name for name in names if name not in values]
    if missing:
        raise ConfigError(
            f"{where}: missing {missing}; validate the config first (the schema fills defaults)"
        )
    kwargs = {}
    for name in names:
        value, hint = values[name], hints[name]
        is_section = dataclasses.is_dataclass(hint)
        kwargs[name] = build(hint, value, f"{where}.{name}") if is_section else value
    return cls(**kwargs)
