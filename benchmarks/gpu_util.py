"""GPU utilisation per part and per step, from gpu_check.sh's nvidia-smi samples and timeline.

::

    python benchmarks/gpu_util.py OUT/gpu_util.csv OUT/timeline.tsv

``gpu_util.csv``: ``nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used
--format=csv,noheader,nounits`` lines (local time, % of the sample period that a kernel ran,
MiB). ``timeline.tsv``: ``label, step, start, end, status`` lines, start and end in Unix
seconds (gpu_check.sh's parts, benchmarks/scale_runner.py's steps). For every part and every
``train`` or ``embed`` step this prints the samples in its window, their mean utilisation and
the share at >= 80 % (issue 26's target during training epochs), over the whole window and over
its active span (first to last sample above 0 %: the step without its start-up, reading and
writing, which leave the GPU idle).
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

BUSY = 80  # % utilisation that counts as busy (issue 26)


def read_samples(path: str) -> pd.DataFrame:
    """Columns ``t`` (Unix seconds), ``util`` (%), ``mem_mib``; unreadable lines dropped."""
    raw = pd.read_csv(path, header=None, names=["time", "util", "mem_mib"], dtype=str)
    stamps = pd.to_datetime(raw["time"].str.strip(), format="%Y/%m/%d %H:%M:%S.%f", errors="coerce")
    samples = pd.DataFrame(
        {
            # nvidia-smi writes local time, as time.time() of the same machine reads it.
            "t": [
                time.mktime(s.timetuple()) + s.microsecond / 1e6 if pd.notna(s) else None
                for s in stamps
            ],
            "util": pd.to_numeric(raw["util"], errors="coerce"),
            "mem_mib": pd.to_numeric(raw["mem_mib"], errors="coerce"),
        }
    )
    return samples.dropna().reset_index(drop=True)


def window_row(samples: pd.DataFrame, start: float, end: float) -> dict[str, float]:
    """Samples, mean % and share >= BUSY in [start, end], whole and over the active span."""
    inside = samples[(samples["t"] >= start) & (samples["t"] <= end)]
    active = inside[inside["util"] > 0]
    span = inside if active.empty else inside.loc[active.index[0] : active.index[-1]]
    row = {"samples": float(len(inside)), "seconds": end - start}
    for name, part in (("window", inside), ("active", span)):
        row[f"mean % ({name})"] = part["util"].mean() if len(part) else float("nan")
        row[f">= {BUSY} % ({name})"] = (part["util"] >= BUSY).mean() if len(part) else float("nan")
    row["peak MiB"] = inside["mem_mib"].max() if len(inside) else float("nan")
    return row


def summary(samples: pd.DataFrame, timeline: pd.DataFrame) -> pd.DataFrame:
    """One row per part and per train or embed step of ``timeline``."""
    rows = []
    for line in timeline.itertuples(index=False):
        if line.label == "part" or line.step in ("train", "embed"):
            name = line.step if line.label == "part" else f"{line.label} {line.step}"
            rows.append(
                {"what": name, "status": line.status, **window_row(samples, line.start, line.end)}
            )
    return pd.DataFrame(rows)


def main() -> None:
    if not Path(sys.argv[1]).stat().st_size:
        print(f"{sys.argv[1]}: no GPU samples (nvidia-smi wrote none)")
        return
    samples = read_samples(sys.argv[1])
    timeline = pd.read_csv(
        sys.argv[2], sep="\t", header=None, names=["label", "step", "start", "end", "status"]
    )
    print(
        f"GPU samples: {len(samples)}, peak memory {samples['mem_mib'].max():.0f} MiB;"
        f" utilisation over the whole run: mean {samples['util'].mean():.0f} %"
    )
    print(summary(samples, timeline).to_string(index=False, float_format="{:.2f}".format))
    started = datetime.fromtimestamp(samples["t"].iloc[0]) if len(samples) else None
    print(f"first sample: {started}; busy means >= {BUSY} % (target during training epochs)")


if __name__ == "__main__":
    main()
