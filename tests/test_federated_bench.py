"""The federated benchmark's control split (``benchmarks/federated.py --iid-sites``): sites
with the union's class mix, the ceiling for what a bank of negatives can recover; ``--set``."""

import numpy as np
import pytest
from conftest import REPO, load_benchmark

from scicontrast.errors import ConfigError

bench = load_benchmark("federated")


def test_iid_sites_give_every_site_the_unions_class_mix():
    labels = np.repeat(np.array(["a", "b", "c"]), [12, 18, 6])
    np.random.default_rng(1).shuffle(labels)
    sites = bench.iid_sites(labels, 6)
    assert sorted(set(sites)) == [f"site{i}" for i in range(6)]
    for site in set(sites):
        mix = {value: int(((sites == site) & (labels == value)).sum()) for value in "abc"}
        assert mix == {"a": 2, "b": 3, "c": 1}, site
    assert (bench.iid_sites(labels, 6) == sites).all()  # seeded: the same split every run


def test_set_changes_the_named_keys_and_refuses_a_misspelt_one():
    experiment = bench.load_experiment(REPO / "benchmarks" / "federated.yaml", "neu_federated")
    changed = bench.override(experiment, ["training.lr=0.004", "federated.server.momentum=0.5"])
    assert changed["training"]["lr"] == 0.004
    assert changed["federated"]["server"]["momentum"] == 0.5
    assert changed["federated"]["server"]["beta_1"] == 0.9  # the schema's default, filled
    assert experiment["training"]["lr"] == 0.002  # the original is left alone
    with pytest.raises(ConfigError, match="'momentun' was unexpected"):
        bench.override(experiment, ["federated.server.momentun=0.5"])
