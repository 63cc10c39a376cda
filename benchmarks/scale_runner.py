"""scale.py's run folder step by step through the ``scicontrast`` CLI, without Snakemake.

::

    python benchmarks/scale.py --sizes 100000 --device cuda --runner cli --budget-s 240 --out DIR

For a machine that lacks Snakemake (a lent GPU machine: docs/gpu.md). The commands are the
Snakefile rules' (``workflows/*.smk``) for what scale.py's targets need: for an audio-image
experiment the demo recordings (``demo-data audio-image``) and their ``synchronize``, then per
experiment ``resolve-config``, ``prepare``, ``pairs``, ``train``, ``embed`` and ``cluster``.
Each finished step writes ``results/<experiment>/benchmarks/<step>.tsv`` in the columns of
Snakemake's ``benchmark:`` files that scale.py reads: ``s`` (wall seconds), ``cpu_time`` (user
plus system CPU seconds of the step's process and of the processes it waited for, from
``wait4``) and ``max_rss`` (``ru_maxrss``, MiB: the largest of those processes' peaks, as
``benchmarks/step_peak.py`` measures; Snakemake samples the process tree instead). A step
whose file exists is not run again; one that failed or was stopped leaves no file, and its
output is removed before it runs again. ``<run>/timeline.tsv`` gets each step's start and end
(Unix seconds), to match GPU utilisation samples to steps.

Experiments run side by side, one thread each (their CPU steps overlap); the steps on the
training device, ``train`` and ``embed``, run one at a time, the waiting step of the experiment
named first going first, so that each has the GPU to itself; with a lock file also one at a
time with other processes that hold it (``flock``: gpu_check.sh's other parts). No step
starts after the deadline, and a running step is stopped at it (SIGTERM to its process group,
SIGKILL 10 s later); so they do when this process gets SIGTERM (``timeout``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from scicontrast.config import read_config_file
from scicontrast.data_adapters.audio_image.synchronization import synchronization_options
from scicontrast.workflow import experiment_json

CLI = [sys.executable, "-m", "scicontrast.cli"]
DEVICE_STEPS = ("train", "embed")
TRAIN_THREADS = 4  # the train rule's `threads:`, capped by the cores as Snakemake caps it
STOP = threading.Event()  # set by SIGTERM: running steps stop as at the deadline


@dataclass(frozen=True)
class Step:
    """One rule's job: its command line, its output path and its benchmark file (relative
    to the run folder)."""

    name: str
    command: list[str]
    output: str
    benchmark: str
    threads: int = 1


def audio_image_steps(config: dict[str, Any]) -> list[Step]:
    """The demo recordings and their synchronisation (rules demo_audio_image, synchronize)."""
    demo = config["demo_data"]["audio_image"]
    options = [f"--{key.replace('_', '-')}={value}" for key, value in demo.items()]
    options = [option for option in options if not option.startswith("--out-dir=")]
    steps = [
        Step(
            "demo_data",
            [*CLI, "demo-data", "audio-image", "--out", demo["out_dir"], *options],
            demo["out_dir"],
            "results/benchmarks/demo_data/audio_image.tsv",
        )
    ]
    for name, entry in config["synchronizations"].items():
        out = f"results/synchronizations/{name}"
        command = [*CLI, "synchronize", *entry["manifests"], "--out", out]
        command += shlex.split(synchronization_options(entry))
        benchmark = f"results/benchmarks/synchronizations/{name}.tsv"
        steps.append(Step("synchronize", command, out, benchmark))
    return steps


def experiment_steps(config: dict[str, Any], name: str, cores: int) -> list[Step]:
    """resolve-config, prepare, pairs, train, embed and cluster of one experiment."""
    r = f"results/{name}"
    conf, items, pairs, model = f"{r}/config.json", f"{r}/items", f"{r}/pairs.parquet", f"{r}/model"
    commands = {
        "resolve_config": (
            ["resolve-config", "--json", experiment_json(config, name), "--experiment", name],
            conf,
        ),
        "prepare": (["prepare", "--config", conf], items),
        "pairs": (["pairs", "--config", conf, "--items", items], pairs),
        "train": (["train", "--config", conf, "--items", items, "--pairs", pairs], model),
        "embed": (["embed", items, "--model", f"{model}/model.pt"], f"{r}/embeddings"),
        "cluster": (
            ["cluster", "--config", conf, "--embeddings", f"{r}/embeddings"],
            f"{r}/clusters",
        ),
    }
    steps = []
    for step, (arguments, output) in commands.items():
        threads = min(TRAIN_THREADS, cores) if step == "train" else 1
        if step == "train":
            arguments = [*arguments, "--threads", str(threads)]
        command = [*CLI, *arguments, "--out", output]
        steps.append(Step(step, command, output, f"{r}/benchmarks/{step}.tsv", threads))
    return steps


def run_step(run: Path, step: Step, log: Path, deadline: float) -> tuple[int, float, float]:
    """``(exit status, CPU seconds, peak MiB)`` of one step run in ``run``; -1: stopped."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.update({key: str(step.threads) for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    with log.open("w") as out:
        process = subprocess.Popen(
            step.command,
            cwd=run,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,  # its own group (loader workers too), in this session
        )
    stopped_at = None
    while True:
        # wait4, not Popen.wait: it also gives the resource usage of the step's processes.
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        now = time.time()
        if (now > deadline or STOP.is_set()) and stopped_at is None:
            os.killpg(process.pid, signal.SIGTERM)
            stopped_at = now
        elif stopped_at is not None and now > stopped_at + 10:
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.2)
    process.returncode = code = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return (code if stopped_at is None else -1), cpu, usage.ru_maxrss / 1024


def locked(handle: IO[str]) -> bool:
    """Whether an exclusive ``flock`` on ``handle`` was taken (without waiting)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class DeviceTurns:
    """One step at a time on the training device: the waiting step of the experiment ranked
    first goes first; with ``lock_file``, a turn also needs an exclusive ``flock`` on it, asked
    for by that step alone (every 0.5 s while another process holds it), so that the rank
    holds when the other process lets go."""

    def __init__(self, ranks: list[str], lock_file: Path | None) -> None:
        self.ranks, self.lock_file = ranks, lock_file
        self.changed = threading.Condition()
        self.busy, self.waiting = False, set[int]()

    @contextmanager
    def turn(self, label: str) -> Iterator[None]:
        rank, mine = self.ranks.index(label), False
        try:
            with ExitStack() as stack:  # closing the lock file lets go of its flock
                handle = (
                    None
                    if self.lock_file is None
                    else stack.enter_context(self.lock_file.open("a"))
                )
                with self.changed:
                    self.waiting.add(rank)
                    while True:
                        self.changed.wait_for(lambda: not self.busy and rank == min(self.waiting))
                        if handle is None or locked(handle):
                            break
                        self.changed.wait(0.5)
                    self.waiting.discard(rank)
                    self.busy = mine = True
                yield
        finally:
            if mine:
                with self.changed:
                    self.busy = False
                    self.changed.notify_all()


class Runner:
    """Runs the chains of steps of one run folder (module docstring)."""

    def __init__(self, run: Path, deadline: float, device: DeviceTurns) -> None:
        self.run, self.deadline, self.device = run, deadline, device
        self.write_lock = threading.Lock()
        self.failed: list[str] = []

    def chain(self, steps: list[Step], label: str) -> None:
        """Run ``steps`` in order; stop at the first that fails or is stopped."""
        for step in steps:
            if (self.run / step.benchmark).is_file():
                continue
            if step.name in DEVICE_STEPS:
                with self.device.turn(label):
                    ok = self.one(step, label)
            else:
                ok = self.one(step, label)
            if not ok:
                return

    def one(self, step: Step, label: str) -> bool:
        if time.time() > self.deadline or STOP.is_set():
            self.failed.append(f"{label} {step.name}: not started (time budget spent)")
            return False
        output, benchmark = self.run / step.output, self.run / step.benchmark
        if output.is_dir():
            shutil.rmtree(output)
        output.unlink(missing_ok=True)
        log = self.run / "results" / "logs" / "cli" / f"{label}_{step.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        start = time.time()
        code, cpu, peak = run_step(self.run, step, log, self.deadline)
        end = time.time()
        with self.write_lock, (self.run / "timeline.tsv").open("a") as timeline:
            timeline.write(f"{label}\t{step.name}\t{start:.3f}\t{end:.3f}\t{code}\n")
        if code != 0:
            why = "stopped at the time budget" if code < 0 else f"exit {code}, log {log}"
            self.failed.append(f"{label} {step.name}: {why}")
            return False
        benchmark.parent.mkdir(parents=True, exist_ok=True)
        row = {"s": end - start, "cpu_time": cpu, "max_rss": peak}
        values = "\t".join(f"{value:.4f}" for value in row.values())
        benchmark.write_text("\t".join(row) + "\n" + values + "\n")
        return True


def run_experiments(
    run: Path, names: list[str], cores: int, deadline: float, lock_file: Path | None = None
) -> list[str]:
    """Run ``names`` (in this order of rank) of ``run/config.yaml`` in ``run``; return what
    failed or was cut short."""
    config = read_config_file(run / "config.yaml")  # schema defaults filled, as Snakemake's
    runner = Runner(run, deadline, DeviceTurns(names, lock_file))
    threads = []
    for name in names:
        steps = experiment_steps(config, name, cores)
        if config["experiments"][name]["adapter"]["name"] == "audio_image":
            steps = audio_image_steps(config) + steps
        threads.append(threading.Thread(target=runner.chain, args=(steps, name)))
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: STOP.set())
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    (run / "failed.json").write_text(json.dumps(runner.failed, indent=1))
    return runner.failed
