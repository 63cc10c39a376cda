"""InfoNCE loss benchmark: forward + backward of NT-Xent beside lightly and pytorch-metric-learning.

::

    # the ``bench`` extras, without letting pip replace a CPU torch:
    pip install --no-deps lightly pytorch-metric-learning torchvision
    python benchmarks/loss_bench.py                # plain-text table
    python benchmarks/loss_bench.py --markdown     # the table in BENCHMARKS.md

For each method and each ``N`` (``2N`` views of dimension ``D = 128``, float32) a fresh
subprocess with ``--threads`` threads (2) builds ``z1, z2 [N, D]`` (leaves that require
grad), runs one warm-up step and then ``--repeats`` timed steps ``loss = f(z1, z2);
loss.backward()``, and reports the median wall time. Peak memory is the growth of the
process's resident set over its size just before the first step: the kernel's high-water
mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` at that point, so the import and
the inputs are not counted. Each worker runs under an address-space limit
(``RLIMIT_AS`` = its size at start + ``--memory-cap-gb``): a method that needs more fails
with an allocation error and is reported as ``OOM`` instead of taking the machine down.

Methods:

* ``scicontrast``: :func:`scicontrast.models.nt_xent`, the chunked exact loss;
* ``scicontrast-dense``: :func:`scicontrast.models.losses.dense_nt_xent`, the dense reference
  (not run by default);
* ``lightly``: ``lightly.loss.NTXentLoss(temperature)`` on ``(z1, z2)``;
* ``pml``: ``pytorch_metric_learning.losses.NTXentLoss(temperature)`` on ``cat(z1, z2)``
  with labels ``cat(arange(N), arange(N))``.

Before timing, one subprocess checks that every method gives the same loss and gradients as
the dense reference at ``N = 256`` in float64 (tolerance ``1e-10``) and float32 (``1e-5``),
and another measures the machine's float32 matrix-multiply rate ``R`` as the median of ten
``4096 x 4096`` products with the same thread count. The floor of a forward + backward pass
is ``12 (2N)^2 D / R`` (three ``2N x 2N x D`` products forward and backward, counted
twice for the dense similarity, as the issue defines it).

Targets (issue 7): at ``N >= 4096`` scicontrast is at least 2x faster than lightly and
within 1.5x of the floor; at ``N >= 8192`` its peak memory is at most a tenth of lightly's.

lightly imports torchvision. Where the only torchvision wheel is a CUDA build whose compiled
operators do not load beside a CPU torch (``operator torchvision::nms does not exist``),
the two operators its meta registrations refer to are defined as placeholders before the
import; lightly's loss never calls them. This shim lives here, never in the package.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DIM = 128
TEMPERATURE = 0.1
SIZES = (256, 1024, 4096, 8192, 16384)
METHODS = ("scicontrast", "lightly", "pml")
ALL_METHODS = ("scicontrast", "scicontrast-dense", "lightly", "pml")
AGREEMENT_N = 256
AGREEMENT_TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
RATE_SIZE = 4096
SPEEDUP_TARGET = 2.0
FLOOR_TARGET = 1.5
MEMORY_TARGET = 0.1


# --------------------------------------------------------------------------- workers


def _import_lightly_ntxent() -> type:
    """``lightly.loss.NTXentLoss``, with placeholder torchvision operators if those fail."""
    try:
        from lightly.loss import NTXentLoss
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        import torch

        for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "lightly")]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "DEF")
        for operator in ("nms", "qnms"):
            library.define(f"{operator}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        # Keep the definitions alive for the life of the process.
        _import_lightly_ntxent.library = library
        from lightly.loss import NTXentLoss
    return NTXentLoss


def _loss_function(method: str) -> Callable[[Any, Any], Any]:
    """``f(z1, z2) -> scalar loss`` for a method name."""
    import torch

    if method == "scicontrast":
        from scicontrast.models import nt_xent

        return lambda z1, z2: nt_xent(z1, z2, TEMPERATURE)
    if method == "scicontrast-dense":
        from scicontrast.models.losses import dense_nt_xent

        return lambda z1, z2: dense_nt_xent(z1, z2, TEMPERATURE)
    if method == "lightly":
        lightly_loss = _import_lightly_ntxent()(temperature=TEMPERATURE)
        return lambda z1, z2: lightly_loss(z1, z2)
    if method == "pml":
        from pytorch_metric_learning.losses import NTXentLoss

        pml_loss = NTXentLoss(temperature=TEMPERATURE)

        def pml(z1: Any, z2: Any) -> Any:
            labels = torch.arange(z1.shape[0], device=z1.device).repeat(2)
            return pml_loss(torch.cat([z1, z2]), labels)

        return pml
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(ALL_METHODS)}")


def _proc_status_kib(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def _limit_address_space(extra_gb: float) -> None:
    limit = _proc_status_kib("VmSize") * 1024 + int(extra_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def worker_time(method: str, n: int, repeats: int, threads: int, cap_gb: float) -> dict:
    """Time ``repeats`` forward + backward steps of one method at one size (in this process)."""
    import torch

    _set_threads(threads)
    loss_fn = _loss_function(method)
    generator = torch.Generator().manual_seed(n)
    z1 = torch.randn(n, DIM, generator=generator).requires_grad_()
    z2 = torch.randn(n, DIM, generator=generator).requires_grad_()
    _limit_address_space(cap_gb)
    baseline_kib = _proc_status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    times, cpu_times = [], []
    try:
        for step in range(repeats + 1):
            z1.grad = z2.grad = None
            started, cpu_started = time.perf_counter(), time.process_time()
            loss_fn(z1, z2).backward()
            if step > 0:  # step 0 is the warm-up
                times.append(time.perf_counter() - started)
                cpu_times.append(time.process_time() - cpu_started)
    except (RuntimeError, MemoryError) as error:
        if isinstance(error, MemoryError) or "alloc" in str(error).lower():
            return {"status": "OOM", "detail": str(error).splitlines()[0][:200]}
        raise
    peak_mib = (_proc_status_kib("VmHWM") - baseline_kib) / 1024
    return {
        "status": "ok",
        "seconds": statistics.median(times),
        "cpu_seconds": statistics.median(cpu_times),
        "times": times,
        "peak_mib": peak_mib,
    }


def worker_rate(threads: int) -> dict:
    """Median float32 matrix-multiply rate (flop/s) of ``RATE_SIZE``-square products."""
    import torch

    _set_threads(threads)
    a = torch.randn(RATE_SIZE, RATE_SIZE)
    b = torch.randn(RATE_SIZE, RATE_SIZE)
    out = torch.empty(RATE_SIZE, RATE_SIZE)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(10):
        started = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - started)
    return {"flops_per_second": 2 * RATE_SIZE**3 / statistics.median(times)}


def worker_agreement(methods: list[str], threads: int) -> dict:
    """Largest relative difference of each method's loss and gradients from the dense loss."""
    import torch

    _set_threads(threads)
    reference = _loss_function("scicontrast-dense")
    result: dict[str, dict[str, float]] = {}
    for dtype in (torch.float64, torch.float32):
        generator = torch.Generator().manual_seed(0)
        z1 = torch.randn(AGREEMENT_N, DIM, generator=generator, dtype=dtype)
        z2 = torch.randn(AGREEMENT_N, DIM, generator=generator, dtype=dtype)
        expected = _value_and_gradients(reference, z1, z2)
        for method in methods:
            try:
                loss_fn = _loss_function(method)
            except ImportError:
                result[method] = "not installed"
                continue
            got = _value_and_gradients(loss_fn, z1, z2)
            difference = max(
                float((g - e).abs().max() / e.abs().max())
                for g, e in zip(got, expected, strict=True)
            )
            result.setdefault(method, {})[str(dtype).removeprefix("torch.")] = difference
    return result


def _value_and_gradients(loss_fn: Callable, z1: Any, z2: Any) -> list:
    z1 = z1.clone().requires_grad_()
    z2 = z2.clone().requires_grad_()
    loss = loss_fn(z1, z2)
    loss.backward()
    return [loss.detach().reshape(1), z1.grad, z2.grad]


# --------------------------------------------------------------------------- driver


def _run_worker(arguments: list[str], threads: int, timeout: float) -> dict:
    environment = dict(os.environ)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        environment[variable] = str(threads)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", *arguments]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=environment, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "detail": f"over {timeout:.0f} s"}
    if completed.returncode != 0:
        last_line = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        # An allocation that bypasses torch's error handling dies with a signal or abort.
        status = "OOM" if "memory" in completed.stderr.lower() else "error"
        return {"status": status, "detail": last_line[:200]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run_benchmark(args: argparse.Namespace) -> dict:
    common = ["--threads", str(args.threads)]
    load_before = _load_average()
    agreement = _run_worker(["agreement", "--methods", *args.methods, *common], args.threads, 600)
    rate = _run_worker(["rate", *common], args.threads, 600)["flops_per_second"]
    cells = []
    for n in args.sizes:
        for method in args.methods:
            result = _run_worker(
                [
                    "time",
                    "--methods",
                    method,
                    "--sizes",
                    str(n),
                    "--repeats",
                    str(args.repeats),
                    "--memory-cap-gb",
                    str(args.memory_cap_gb),
                    *common,
                ],
                args.threads,
                args.timeout,
            )
            cells.append({"method": method, "n": n, **result})
            print(f"  {method:18s} N={n:6d} {_cell_summary(result)}", file=sys.stderr, flush=True)
    return {
        "threads": args.threads,
        "dim": DIM,
        "temperature": TEMPERATURE,
        "repeats": args.repeats,
        "memory_cap_gb": args.memory_cap_gb,
        "matmul_flops_per_second": rate,
        "agreement": agreement,
        "cells": cells,
        "load_average_before": load_before,
        "load_average_after": _load_average(),
        "cpu": _cpu_name(),
    }


def _cell_summary(result: dict) -> str:
    if result["status"] != "ok":
        return result["status"]
    return f"{result['seconds']:.3f} s, {result['peak_mib']:.0f} MiB"


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def floor_seconds(n: int, flops_per_second: float) -> float:
    """The issue's floor ``12 (2N)^2 D / R`` for one forward + backward pass."""
    return 12 * (2 * n) ** 2 * DIM / flops_per_second


def table_rows(report: dict) -> list[list[str]]:
    """One row per (N, method): time, peak memory, ratios to lightly and to the floor."""
    by_key = {(cell["n"], cell["method"]): cell for cell in report["cells"]}
    rows = []
    for (n, method), cell in by_key.items():
        floor = floor_seconds(n, report["matmul_flops_per_second"])
        lightly = by_key.get((n, "lightly"), {})
        if cell["status"] != "ok":
            rows.append([str(n), method, cell["status"], "", "", "", "", f"{floor:.3f}"])
            continue
        speedup = peak_ratio = ""
        if lightly.get("status") == "ok" and method != "lightly":
            speedup = f"{lightly['seconds'] / cell['seconds']:.2f}x"
            peak_ratio = f"{cell['peak_mib'] / lightly['peak_mib']:.3f}"
        rows.append(
            [
                str(n),
                method,
                f"{cell['seconds']:.3f}",
                f"{cell['cpu_seconds']:.3f}",
                f"{cell['peak_mib']:.0f}",
                speedup,
                peak_ratio,
                f"{floor:.3f} ({cell['seconds'] / floor:.2f}x)",
            ]
        )
    return rows


HEADER = [
    "N",
    "method",
    "median s",
    "CPU s",
    "peak MiB",
    "speed vs lightly",
    "peak / lightly's",
    "floor s (time / floor)",
]


def target_lines(report: dict) -> list[str]:
    """PASS/FAIL of the numerical agreement and of each target of the issue."""
    lines = []
    for method, values in report["agreement"].items():
        if not isinstance(values, dict):
            continue
        for dtype, difference in sorted(values.items()):
            tolerance = AGREEMENT_TOLERANCE[dtype]
            verdict = "PASS" if difference <= tolerance else "FAIL"
            lines.append(
                f"{method} agrees with the dense loss in {dtype} "
                f"({difference:.1e} <= {tolerance:.0e}): {verdict}"
            )
    by_key = {(cell["n"], cell["method"]): cell for cell in report["cells"]}
    for (n, method), cell in sorted(by_key.items()):
        if method != "scicontrast" or cell["status"] != "ok":
            continue
        lightly = by_key.get((n, "lightly"), {})
        floor = floor_seconds(n, report["matmul_flops_per_second"])
        checks = []
        if n >= 4096:
            if lightly.get("status") == "ok":
                speedup = lightly["seconds"] / cell["seconds"]
                checks.append((f"{speedup:.2f}x faster than lightly (>= 2x)", speedup >= 2))
            ratio = cell["seconds"] / floor
            checks.append((f"{ratio:.2f}x the floor (<= 1.5x)", ratio <= FLOOR_TARGET))
        if n >= 8192 and lightly.get("status") == "ok":
            share = cell["peak_mib"] / lightly["peak_mib"]
            checks.append((f"peak {share:.3f} of lightly's (<= 0.1)", share <= MEMORY_TARGET))
        lines += [f"N={n}: {text}: {'PASS' if ok else 'FAIL'}" for text, ok in checks]
    return lines


def format_report(report: dict, markdown: bool) -> str:
    rows = table_rows(report)
    rate = report["matmul_flops_per_second"] / 1e9
    agreement = ", ".join(
        f"{method} "
        + (
            "/".join(f"{d} {v:.1e}" for d, v in sorted(values.items()))
            if isinstance(values, dict)
            else str(values)
        )
        for method, values in report["agreement"].items()
    )
    preamble = [
        f"CPU: {report['cpu']}, {report['threads']} threads, D = {report['dim']}, float32, "
        f"tau = {report['temperature']}, median of {report['repeats']} after one warm-up "
        "(wall time; CPU s: the process's CPU time over its threads).",
        f"Measured float32 matmul rate ({RATE_SIZE}^2 x {RATE_SIZE}): {rate:.1f} GFLOP/s.",
        f"Largest relative difference from the dense loss at N = {AGREEMENT_N} "
        f"(loss and gradients): {agreement}.",
        f"Load average (1, 5, 15 min) before: {report['load_average_before']}, "
        f"after: {report['load_average_after']}.",
    ]
    if markdown:
        lines = [*(f"{line}  " for line in preamble), ""]
        lines.append("| " + " | ".join(HEADER) + " |")
        lines.append("|" + "|".join("---" for _ in HEADER) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines += ["", *(f"- {line}" for line in target_lines(report))]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    lines = [*preamble, ""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([*lines, "", *target_lines(report)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=ALL_METHODS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-cap-gb", type=float, default=12.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per cell")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw report here")
    parser.add_argument("--worker", choices=("time", "rate", "agreement"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == "time":
        result = worker_time(
            args.methods[0], args.sizes[0], args.repeats, args.threads, args.memory_cap_gb
        )
    elif args.worker == "rate":
        result = worker_rate(args.threads)
    elif args.worker == "agreement":
        result = worker_agreement(args.methods, args.threads)
    else:
        report = run_benchmark(args)
        if args.json:
            from scicontrast.io import write_json

            write_json(args.json, report)
        print(format_report(report, args.markdown))
        return 0
    print(json.dumps(result, allow_nan=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
