"""The federated benchmark's control split (``benchmarks/federated.py --iid-sites``): sites
with the union's class mix, the ceiling for what a bank of negatives can recover."""

import numpy as np
from conftest import load_benchmark

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
