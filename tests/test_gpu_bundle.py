"""What benchmarks/gpu_check.sh needs on a lent GPU machine (docs/gpu.md): the wheels carried
there, the files it sends back, the Snakemake-free scale runner and the utilisation summary."""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
import time

import pandas as pd
import pytest
import tomllib
from conftest import REPO, load_benchmark
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scicontrast.cli.parsers import build_parser
from scicontrast.config import read_config_file

# The machine's interpreter: requirement markers are evaluated for it, not for this one.
MACHINE = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


def names(path: str) -> list[str]:
    return [line.strip() for line in (REPO / path).read_text().splitlines() if line.strip()]


def carried() -> dict[str, str]:
    """benchmarks/gpu_wheels.txt: name -> pinned version."""
    pins = [line.split("==") for line in names("benchmarks/gpu_wheels.txt") if line[0] != "#"]
    return {canonicalize_name(name): version for name, version in pins}


def left_out() -> set[str]:
    text = (REPO / "benchmarks" / "gpu_wheels.txt").read_text()
    return {canonicalize_name(name) for name in re.findall(r"^# left out: (\S+)", text, re.M)}


def on_machine() -> set[str]:
    lines = names("benchmarks/gpu_device_packages.txt")
    return {canonicalize_name(line) for line in lines if line[0] != "#"}


def runtime_closure(roots: list[str], skip: set[str]) -> dict[str, str]:
    """Every distribution that ``roots`` need on the machine (name -> who needs it), through
    the metadata of the distributions installed here; ``skip`` and their needs left out, and
    the needs of a package the machine has too (its image holds them, for its version)."""
    needed: dict[str, str] = {}
    stack = [(Requirement(root), "pyproject") for root in roots]
    while stack:
        requirement, parent = stack.pop()
        name = canonicalize_name(requirement.name)
        if requirement.marker and not requirement.marker.evaluate(MACHINE):
            continue
        if name in skip or name in needed:
            continue
        needed[name] = parent
        if name in on_machine():
            continue
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue  # its needs are unknown here; it is checked by name alone
        stack += [(Requirement(text), name) for text in requires]
    return needed


def test_every_runtime_need_is_on_the_machine_or_carried():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(r).name) for r in dependencies["dependencies"]}
    assert left_out() <= declared, "a left-out root is no runtime dependency"
    closure = runtime_closure(dependencies["dependencies"], left_out())
    missing = {
        name: parent
        for name, parent in closure.items()
        if name not in on_machine() and name not in carried()
    }
    assert not missing, f"neither on the machine nor in gpu_wheels.txt (needed by): {missing}"
    # Two versions of one package stop the whole install there.
    assert not set(carried()) & on_machine(), "a carried wheel is already on the machine"
    unused = set(carried()) - set(closure)
    assert not unused, f"carried but needed by no runtime dependency: {unused}"


def test_gpu_check_returns_at_most_eight_flat_files():
    script = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    files = {name for name in re.findall(r'\$OUT/([^"\s)]+)', script) if name[0] != "$"}
    files |= set(re.findall(r"^\s*(?:wanted \w+ && )?part \w+ \S+ (\S+)", script, re.M))
    assert files >= {"summary.txt", "gpu_util.csv", "timeline.tsv", "scale.md"}
    assert len(files) <= 8, sorted(files)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in files), sorted(files)


@pytest.fixture(scope="module")
def runner():
    return load_benchmark("scale_runner")


def test_runner_commands_are_the_cli_s(runner):
    """Each step's command parses with scicontrast's own parser and writes the declared output."""
    config = read_config_file(REPO / "config.yaml")
    steps = runner.audio_image_steps(config)
    for name in config["experiments"]:
        steps += runner.experiment_steps(config, name, cores=16)
    parser = build_parser()
    for step in steps:
        assert step.command[:3] == [sys.executable, "-m", "scicontrast.cli"]
        arguments = parser.parse_args(step.command[3:])
        assert str(arguments.out) == step.output, step
    train = [step for step in steps if step.name == "train"]
    assert {step.threads for step in train} == {runner.TRAIN_THREADS}


def test_run_step_measures_and_stops_at_the_deadline(runner, tmp_path):
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    step = runner.Step("burn", [sys.executable, "-c", burn], "x", "x.tsv")
    code, cpu, peak = runner.run_step(tmp_path, step, tmp_path / "log", time.time() + 60)
    assert code == 0 and 0.3 <= cpu < 5 and peak > 1
    sleep = runner.Step("sleep", [sys.executable, "-c", "import time; time.sleep(60)"], "x", "x")
    started = time.time()
    code, _, _ = runner.run_step(tmp_path, sleep, tmp_path / "log", started + 0.5)
    assert code == -1 and time.time() - started < 5


def test_utilisation_per_window():
    util = load_benchmark("gpu_util")
    # 10 samples a second: idle for 1 s, then 0, 50, 90, 100 % in turn for 2 s, idle again.
    t = [100 + i / 10 for i in range(50)]
    busy = [0] * 10 + [0, 50, 90, 100] * 5 + [0] * 20
    samples = pd.DataFrame({"t": t, "util": busy, "mem_mib": range(50)})
    row = util.window_row(samples, 100.0, 104.95)
    assert row["samples"] == 50 and row["peak MiB"] == 49
    assert row[">= 80 % (window)"] == pytest.approx(10 / 50)
    # Active span: the first to the last sample above 0 %: 50, 90, 100, (0, 50, 90, 100) x 4.
    assert row[">= 80 % (active)"] == pytest.approx(10 / 19)
    assert row["mean % (active)"] == pytest.approx(1200 / 19)


def test_device_turns_keep_the_rank_behind_another_process_lock(runner, tmp_path):
    """Steps waiting while another process (gpu_check.sh's demo parts) holds the lock file go
    in the experiments' rank once it lets go, whichever came first."""
    import fcntl
    import threading

    lock_file = tmp_path / "device.lock"
    turns, order = runner.DeviceTurns(["images", "dna"], lock_file), []

    def step(label):
        with turns.turn(label):
            order.append(label)
            time.sleep(0.05)

    with lock_file.open("a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        threads = [threading.Thread(target=step, args=(label,)) for label in ("dna", "images")]
        for thread in threads:
            thread.start()
            time.sleep(0.2)
        assert order == []
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["images", "dna"]
