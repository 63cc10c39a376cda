"""benchmarks/step_peak.py: a step's exit status, CPU seconds and the kernel's peak."""

import time
from pathlib import Path

from conftest import load_benchmark

step_peak = load_benchmark("step_peak")


def high_water_mib() -> float:
    """``VmHWM`` of this process (the kernel's peak resident set), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_a_step_reports_its_exit_status_cpu_and_the_kernels_peak(tmp_path):
    cpu_before = time.process_time()
    out = tmp_path / "pairs.parquet"
    argv = ["pairs", "--config", str(tmp_path / "missing.json"), "--items", str(tmp_path)]
    status, cpu, peak = step_peak.measured([*argv, "--out", str(out)])
    assert status == 2  # the CLI's exit status for bad input, passed on
    assert not out.exists()
    assert cpu >= cpu_before
    assert abs(peak - high_water_mib()) < 1
