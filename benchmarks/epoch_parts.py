"""CPU milliseconds of the parts of a training epoch, beside the plain loop's step.

::

    OMP_NUM_THREADS=1 python benchmarks/epoch_parts.py graph_demo --results results

For one prepared experiment (``results/<name>/``: ``config.json``, ``items``,
``pairs.parquet``, as the workflow writes them) it builds the training loop's own objects
(:class:`~scicontrast.models.train_setup.Loop`), takes one step so that AdamW has state, and
times on the first training batch: the loop's step (``_train_step``: forward, the library
loss with its metrics, backward, AdamW) against the plain step of
``benchmarks/throughput.py`` (textbook InfoNCE), the held-out pass
(``contrastive_metrics`` on the kept held-out views) and a checkpoint write. Each figure is
the least, over alternating rounds, of the mean of ``--repeats`` calls, in CPU seconds of
this process (the machine may be shared: the wall clock swings with the load). What these
add up to per epoch is what ``throughput.py``'s "one more epoch" ratio measures in place.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

# The plain loop is throughput.py's, beside this script.
sys.path.insert(0, str(Path(__file__).parent))
import throughput

from scicontrast.config import load_experiment
from scicontrast.device import resolve_device
from scicontrast.experiment import Experiment
from scicontrast.models import train_setup
from scicontrast.models.contrastive_metrics import contrastive_metrics
from scicontrast.models.distributed import start_process_group
from scicontrast.models.run_state import Position, save_checkpoint
from scicontrast.models.train import _train_step


def least_ms(parts: dict[str, Callable[[], object]], repeats: int, rounds: int) -> dict:
    """Per part, the least over ``rounds`` alternating rounds of its mean CPU ms per call."""
    best = dict.fromkeys(parts, float("inf"))
    for _ in range(rounds):
        for name, call in parts.items():
            call()  # untimed: the first call may pay lazy set-up
            started = time.process_time()
            for _ in range(repeats):
                call()
            best[name] = min(best[name], (time.process_time() - started) / repeats * 1e3)
    return best


def epoch_parts(folder: Path, repeats: int, rounds: int) -> dict[str, float]:
    """The parts of ``folder``'s experiment (module docstring), CPU ms each."""
    experiment = load_experiment(folder / "config.json")
    experiment["training"]["device"] = "cpu"
    items, pairs = folder / "items", folder / "pairs.parquet"
    out = Path(tempfile.mkdtemp())
    group = start_process_group(resolve_device("cpu"))
    loop = train_setup.Loop(Experiment.from_dict(experiment), group, out / "checkpoint.pt", False)
    train_setup.load_data(loop, items, pairs, 1)
    train_setup.build_model_and_optimizer(loop)
    train_setup.resume_position(loop, False)
    loop.network = loop.model
    loop.batches.set_epoch(0)
    batch = next(iter(loop.batches))
    _, model, optimizer = throughput.plain_setup(experiment, items, pairs, "cpu")
    tau = experiment["loss"]["temperature"]
    torch.use_deterministic_algorithms(True)  # as the loop runs on CPU

    def loop_step() -> None:
        loop.model.train()
        _train_step(loop, batch, 0)

    parts: dict[str, Callable[[], object]] = {
        "plain step": lambda: throughput.plain_step(model, optimizer, batch, tau),
        "loop step": loop_step,
        "checkpoint": lambda: save_checkpoint(loop, Position(1, 0, 1), group.device),
    }
    if loop.held_out_batches is not None:
        parts["held-out pass"] = lambda: contrastive_metrics(
            loop.model, loop.held_out_batches, group.device
        )
    result = least_ms(parts, repeats, rounds)
    result["steps per epoch"] = len(loop.batches)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="experiment with prepared inputs under --results")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--repeats", type=int, default=20, help="calls per timed round")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, value in epoch_parts(args.results / args.name, args.repeats, args.rounds).items():
        print(f"{name:16s} {value:8.2f}")


if __name__ == "__main__":
    main()
