"""One workflow step in this process: its CPU seconds and exact peak memory.

::

    python benchmarks/step_peak.py pairs --config R/config.json --items R/items --out R/p.parquet

The arguments are a ``scicontrast`` command line (the rule's command, which ``snakemake -n -p``
prints in a run folder of ``benchmarks/scale.py``). It runs through ``scicontrast.cli.main``,
then prints ``STEP cpu_s=... peak_mib=...`` on stderr: user plus system CPU seconds and
``ru_maxrss``, the kernel's high-water mark of the resident set. Snakemake's ``benchmark:``
``max_rss``, which ``scale.py`` reports, samples the process and can miss a short step's peak;
the per-step figures of BENCHMARKS.md's scale table are this script's.
"""

from __future__ import annotations

import resource
import sys

from scicontrast.cli import main


def measured(argv: list[str]) -> tuple[int, float, float]:
    """``(exit status, CPU seconds, peak MiB)`` of ``scicontrast argv`` run in this process."""
    status = main(argv)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return status, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


if __name__ == "__main__":
    status, cpu, peak = measured(sys.argv[1:])
    print(f"{sys.argv[1]} cpu_s={cpu:.2f} peak_mib={peak:.0f}", file=sys.stderr)
    sys.exit(status)
