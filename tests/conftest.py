"""Shared test helpers."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

# torch's CPU threads are OpenMP's, which spin on their core while they wait for work (libgomp's
# default). The test command's two xdist workers each run torch on 2 threads on 2 cores, so a
# waiting thread burns the core the other worker needs: 3 epochs of the Cora test's training
# took 10.2 CPU s spinning, 4.0 waiting passively, with the same numbers (same threads, same
# split of the work). Set here, before anything imports torch; Snakemake jobs inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def load_benchmark(script: str) -> ModuleType:
    """Import ``benchmarks/<script>.py`` (a script folder, not a package) as a module."""
    spec = importlib.util.spec_from_file_location(
        f"{script}_benchmark", REPO / "benchmarks" / f"{script}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# glibc hands every freed block above its mmap threshold (32 MiB at most) back to the kernel,
# so each training step of a workflow job maps its activations afresh and faults them in page
# by page: a third of the DNA demo's training CPU seconds were the kernel's. The tests' workflow
# runs keep freed memory in the heap for reuse instead: the same numbers (checked on the demo's
# losses), 0.8 GB more resident memory, 146 -> 109 CPU s in its train job
# (docs/experiments/ciperf.md).
MALLOC_REUSE = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(2**34),
    "MALLOC_TOP_PAD_": str(2**28),
}


def resident_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (``/proc/self/smaps``)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = fields[-1] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def workflow_env() -> dict[str, str]:
    """The environment for a test's Snakemake run: this one, with ``MALLOC_REUSE``."""
    return {**os.environ, **MALLOC_REUSE}


def run_cli(*args: str | Path) -> SimpleNamespace:
    """``scicontrast ARGS`` in this process (a subprocess spends seconds importing torch):
    its exit status and what it printed, as ``subprocess.run`` would report them. An
    uncaught exception, which the console would show as a traceback, fails the test."""
    from scicontrast import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            returncode = cli.main([str(arg) for arg in args])
    finally:
        logging.captureWarnings(False)  # main() routes warnings to logging for its process
    return SimpleNamespace(
        returncode=returncode, stdout=stdout.getvalue(), stderr=stderr.getvalue()
    )


def minimal_experiment(**overrides) -> dict:
    """The smallest valid experiment: components named, everything else defaulted."""
    experiment = {
        "adapter": {"name": "dna_fasta", "params": {"paths": ["x.fa"], "window": 50}},
        "pairs": {"name": "dna_views"},
        "encoder": {"name": "dna_cnn"},
    }
    experiment.update(overrides)
    return experiment


# In this order: the DNA demo run (``dna_demo_run``, ~140 CPU s), the audio-image workflow
# (~65), and the workflow's checks (~30 of their own), which read the demo run: the other
# xdist worker reaches them after the audio-image workflow, as the demo run ends.
LONGEST_FILES = ("test_readme.py", "test_audio_image_workflow.py", "test_workflow.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that reads the real data sets must say so with the ``real_data`` marker; long
    runs go first."""
    unmarked = [
        item.nodeid
        for item in items
        if "shared_data" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("real_data") is None
    ]
    if unmarked:
        raise pytest.UsageError(f"tests using shared_data lack @pytest.mark.real_data: {unmarked}")
    # The longest files first, in LONGEST_FILES's order, then the other long runs (stable
    # otherwise): the test command's pytest-xdist workers take whole files in this order
    # (--no-loadscope-reorder), so the longest start at once instead of ending the run.
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(
        key=lambda item: (
            rank.get(item.path.name, len(LONGEST_FILES)),
            not item.get_closest_marker("slow"),
        )
    )


DNA_DEMO_TARGETS = tuple(
    f"results/dna_demo/{output}" for output in ("metrics/summary.txt", "export", "plots")
)


def run_dna_demo(workdir: Path) -> str:
    """The shipped ``config.yaml``'s DNA demo, every output of the default target
    (``DNA_DEMO_TARGETS``), run by Snakemake in ``workdir`` on 2 cores; what it printed."""
    import subprocess

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text((REPO / "config.yaml").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
         str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2",
         *DNA_DEMO_TARGETS],
        capture_output=True, text=True, check=False, env=workflow_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="session")
def dna_demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The folder of one DNA demo run (:func:`run_dna_demo`) and what Snakemake printed.

    The README's figures and the workflow's outputs are checked on this one run (~140 CPU s).
    Under pytest-xdist the workers share it through their common temporary folder: the first
    to ask runs it while holding a lock, the others wait for it and read it.
    """
    from filelock import FileLock

    if "PYTEST_XDIST_WORKER" not in os.environ:
        workdir = tmp_path_factory.mktemp("dna_demo")
        return workdir, run_dna_demo(workdir)
    workdir = tmp_path_factory.getbasetemp().parent / "dna_demo"
    printed = workdir.with_name("dna_demo_printed.txt")
    with FileLock(workdir.with_name("dna_demo.lock")):
        if not printed.is_file():  # written last: a failed run is run again, not read
            printed.write_text(run_dna_demo(workdir))
    return workdir, printed.read_text()


@pytest.fixture
def shared_data() -> Path:
    """The real data sets beside the repository; skips the test when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def small_dna_experiment(
    folder: Path, sequences_per_source: int, training: dict | None = None
) -> tuple[dict, list[Path]]:
    """A small two-source DNA experiment named ``small`` on demo FASTA written to ``folder``.

    Saves its items to ``folder/items`` and its pairs table to ``folder/pairs.parquet``;
    returns the validated experiment and the FASTA files. Labels: ``source`` from file names.
    """
    from scicontrast.config import validate_config
    from scicontrast.data_adapters.dna.demo import generate_demo_dna
    from scicontrast.io import write_parquet
    from scicontrast.registry import ADAPTERS, PAIR_BUILDERS

    fasta = generate_demo_dna(
        folder / "fa", sources=2, sequences_per_source=sequences_per_source, length=90
    )
    small = {
        "adapter": {
            "name": "dna_fasta",
            "params": {
                "paths": [str(p) for p in fasta],
                "window": 40,
                "stride": 20,
                "flank": 2,
                "label_from_filename": r"(?P<source>source_\d+)\.fa$",
            },
        },
        "pairs": {"name": "dna_views", "params": {"max_shift": 2}},
        "encoder": {"name": "dna_cnn", "params": {"channels": 8, "embedding_dim": 12}},
        "head": {"hidden_dim": 8, "output_dim": 4},
        "training": training or {},
        "analysis": {"label_column": "source"},
    }
    experiment = {
        "name": "small",
        **validate_config({"experiments": {"small": small}})["experiments"]["small"],
    }
    items = ADAPTERS.create(experiment["adapter"]).read()
    items.save(folder / "items")
    write_parquet(folder / "pairs.parquet", PAIR_BUILDERS.create(experiment["pairs"]).build(items))
    return experiment, fasta
