"""The NEU benchmark's choice among settings (``benchmarks/neu.py``): validation only."""

from __future__ import annotations

from conftest import load_benchmark


def _row(bench, name: str, accuracy: float, auroc: float, test: float, invariant: bool = True):
    return bench.Row(
        method=name,
        probe={"accuracy": {"mean": test, "std": 0.0}},
        validation={"accuracy": accuracy, "balanced_accuracy": accuracy, "auroc": auroc},
        knn={"accuracy": {"mean": 0.9, "std": 0.0}, "k": 10},
        invariance={"score": 0.999, "cos_positive": 1.0, "cos_random": 0.8} if invariant else None,
    )


def test_choice_follows_validation_accuracy_then_auroc_never_the_test_score():
    bench = load_benchmark("neu")
    rows = [
        _row(bench, "baseline", 0.999, 1.0, 0.999, invariant=False),
        _row(bench, "short", 0.9875, 0.99966, 0.990),
        _row(bench, "long", 0.9875, 0.99970, 0.980),
        _row(bench, "best auroc", 0.9861, 0.99999, 0.995),
    ]
    assert "chosen on validation: long, val 98.75 / 0.99970;" in bench.chosen_text(rows)
    rows[1].validation["accuracy"] = 0.9889
    assert "chosen on validation: short, val 98.89 / 0.99966;" in bench.chosen_text(rows)
