"""Clustering leaves the caller's OpenMP thread count, which torch's sums depend on, alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# In a fresh process: numba changes the OpenMP thread count only when its first parallel loop
# starts its OpenMP layer. A stand-in NNDescent runs one (pynndescent's own numba compilation
# takes ~30 CPU s) and reports the thread count torch sees right after it.
SCRIPT = textwrap.dedent(
    """
    import sys, types
    import numba
    import numpy as np
    import torch
    from scicontrast.analysis.cluster_scale import approximate_neighbors

    @numba.njit(parallel=True)
    def total(x):
        s = 0.0
        for i in numba.prange(x.shape[0]):
            s += x[i]
        return s

    class NNDescent:
        def __init__(self, data, n_neighbors, **options):
            total(data[:, 0].astype(np.float64))
            self.inside = torch.get_num_threads()
            self.neighbor_graph = (np.zeros((len(data), n_neighbors), dtype=np.int64), None)
            NNDescent.last = self

    sys.modules["pynndescent"] = types.SimpleNamespace(NNDescent=NNDescent)
    threads = numba.config.NUMBA_NUM_THREADS + 1  # never numba's own count
    torch.set_num_threads(threads)
    torch.get_num_threads()  # torch reads its count in this thread from here on
    approximate_neighbors(np.eye(4, dtype=np.float32), 2, seed=0)
    print(numba.threading_layer(), threads, NNDescent.last.inside, torch.get_num_threads())
    """
)


def test_approximate_neighbors_restores_the_callers_torch_threads():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    layer, threads, inside, after = result.stdout.split()
    if layer != "omp":
        pytest.skip(f"numba's {layer} threading layer leaves OpenMP's thread count alone")
    # numba's OpenMP layer did change it (so this test can fail), and it was put back: a
    # train() after clustering in one process runs with the threads it was started with.
    assert inside != threads
    assert after == threads
