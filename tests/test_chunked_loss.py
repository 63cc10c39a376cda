"""Chunked InfoNCE against the dense loss of ``losses.py``: values, gradients, metrics, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import load_benchmark

import scicontrast.models
from scicontrast.errors import ConfigError
from scicontrast.models import chunked_loss
from scicontrast.models.chunked_loss import ChunkedInfoNCELoss, chunked_info_nce
from scicontrast.models.loss_metrics import uniformity
from scicontrast.models.losses import InfoNCELoss, dense_nt_xent

EXACT = {"rtol": 1e-10, "atol": 1e-12}
FLOAT32 = {"rtol": 1e-5, "atol": 1e-6}


def _views(rows: int, dim: int, dtype: torch.dtype = torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, dim, generator=generator, dtype=dtype)
    # Groups of 1 to 4 views (singletons are negatives only), in shuffled order.
    sizes = torch.arange(rows) % 4 + 1
    ids = torch.repeat_interleave(torch.arange(rows), sizes)[:rows]
    ids = ids[torch.randperm(rows, generator=generator)]
    return z, ids


def _dense(z: torch.Tensor, ids: torch.Tensor, tau: float, pairs=None):
    z = z.clone().requires_grad_()
    out = InfoNCELoss(tau)(z, ids, pairs)
    out.loss.backward()
    return out, z.grad


def _chunked(z: torch.Tensor, ids: torch.Tensor, tau: float, **kwargs):
    z = z.clone().requires_grad_()
    loss, stats = chunked_info_nce(z, ids, tau, **kwargs)
    loss.backward()
    return loss, stats, z.grad


@pytest.mark.parametrize(
    ("tau", "block_size"),
    [
        (0.1, 1),
        (0.1, 7),
        (0.1, 64),
        (0.1, 97),
        (0.1, 1000),
        (0.5, 30),
        (0.005, 30),
        (0.001, 1),
        (0.001, 30),
        (0.001, 1000),
    ],
)
def test_equals_dense_loss_in_float64(tau, block_size):
    z, ids = _views(97, 16)
    dense, dense_grad = _dense(z, ids, tau)
    loss, stats, grad = _chunked(z, ids, tau, block_size=block_size, uniformity=True)
    torch.testing.assert_close(loss, dense.loss.detach(), **EXACT)
    torch.testing.assert_close(grad, dense_grad, **EXACT)
    assert stats.keys() == dense.metrics.keys()
    for key, value in dense.metrics.items():
        assert stats[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_both_paths_are_exercised():
    # tau = 0.001 in float64 and tau = 0.01 in float32 are beyond the symmetric path's range.
    assert chunked_loss._fits_exponent_range(1 / 0.1, 10**6, torch.float32)
    assert chunked_loss._fits_exponent_range(1 / 0.015, 65536, torch.float32)
    assert not chunked_loss._fits_exponent_range(1 / 0.01, 1000, torch.float32)
    assert chunked_loss._fits_exponent_range(1 / 0.01, 1000, torch.float64)
    assert not chunked_loss._fits_exponent_range(1 / 0.001, 1000, torch.float64)


@pytest.mark.parametrize("tau", [0.1, 0.02, 0.01])
def test_equals_dense_loss_in_float32(tau):
    z, ids = _views(300, 32, torch.float32, seed=1)
    dense, dense_grad = _dense(z, ids, tau)
    loss, stats, grad = _chunked(z, ids, tau, block_size=64)
    torch.testing.assert_close(loss, dense.loss.detach(), **FLOAT32)
    torch.testing.assert_close(grad, dense_grad, rtol=1e-5, atol=1e-5 * dense_grad.abs().max())
    assert stats["pos_sim"] == pytest.approx(dense.metrics["pos_sim"], abs=1e-6)


def test_extra_positive_pairs_match_dense():
    z, ids = _views(120, 8, seed=2)
    pairs = torch.randint(0, 120, (2, 200), generator=torch.Generator().manual_seed(3))
    # Duplicates, self pairs and pairs within a group must count once or not at all.
    same_group = torch.nonzero(ids[:, None] == ids[None, :]).T[:, :10]
    pairs = torch.cat([pairs, pairs[:, :30], torch.arange(5).repeat(2, 1), same_group], dim=1)
    dense, dense_grad = _dense(z, ids, 0.2, pairs)
    loss, stats, grad = _chunked(z, ids, 0.2, positive_pairs=pairs, block_size=16)
    torch.testing.assert_close(loss, dense.loss.detach(), **EXACT)
    torch.testing.assert_close(grad, dense_grad, **EXACT)
    for key, value in dense.metrics.items():
        if key != "uniformity":
            assert stats[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("tau", [0.07, 0.01])
def test_learnable_temperature_gradient_matches_dense(tau):
    z, ids = _views(150, 16, seed=4)
    grads = []
    for loss_cls in (InfoNCELoss, ChunkedInfoNCELoss):
        loss_fn = loss_cls(tau, learnable_temperature=True)
        zz = z.clone().requires_grad_()
        loss_fn(zz, ids).loss.backward()
        grads.append((zz.grad, loss_fn.temperature.log_inverse.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], **EXACT)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-9, atol=1e-12)
    assert grads[0][1].abs() > 1e-3  # the check above is not 0 == 0


def test_public_nt_xent_is_the_chunked_form_and_equals_the_dense_one():
    assert scicontrast.models.nt_xent is chunked_loss.nt_xent
    for dtype, tolerance in ((torch.float64, EXACT), (torch.float32, FLOAT32)):
        generator = torch.Generator().manual_seed(5)
        z1 = torch.randn(257, 128, generator=generator, dtype=dtype, requires_grad=True)
        z2 = torch.randn(257, 128, generator=generator, dtype=dtype, requires_grad=True)
        fast = scicontrast.models.nt_xent(z1, z2, 0.1)
        fast_grads = torch.autograd.grad(fast, [z1, z2])
        dense = dense_nt_xent(z1, z2, 0.1)
        dense_grads = torch.autograd.grad(dense, [z1, z2])
        torch.testing.assert_close(fast, dense, **tolerance)
        for got, expected in zip(fast_grads, dense_grads, strict=True):
            torch.testing.assert_close(got, expected, **tolerance)


def test_nt_xent_matches_the_group_id_form():
    generator = torch.Generator().manual_seed(10)
    z1, z2 = torch.randn(2, 40, 8, generator=generator, dtype=torch.float64)
    loss, _ = chunked_info_nce(torch.cat([z1, z2]), torch.arange(40).repeat(2), 0.3)
    torch.testing.assert_close(scicontrast.models.nt_xent(z1, z2, 0.3), loss, **EXACT)


def test_uniformity_matches_wang_isola():
    z, ids = _views(90, 8, seed=6)
    for tau in (0.1, 0.001):  # symmetric and row path
        _, stats = chunked_info_nce(z, ids, tau, uniformity=True, block_size=20)
        expected = uniformity(torch.nn.functional.normalize(z, dim=1))
        assert stats["uniformity"] == pytest.approx(float(expected), rel=1e-10)
    _, stats = chunked_info_nce(z, ids, 0.1)
    assert stats["uniformity"] != stats["uniformity"]  # nan unless asked for


def test_no_positive_warns_and_gives_zero_with_a_graph():
    z = torch.randn(6, 4, requires_grad=True)
    with pytest.warns(UserWarning, match="no anchor"):
        loss, stats = chunked_info_nce(z, torch.arange(6), 0.1)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(z.grad, torch.zeros_like(z))
    assert stats["anchors_without_positive"] == 6
    with pytest.warns(UserWarning, match="no anchor"):
        single, _ = chunked_info_nce(torch.randn(1, 4), torch.tensor([3]), 0.1)
    assert float(single) == 0.0


def test_low_precision_inputs_are_computed_in_float32():
    z, ids = _views(64, 16, torch.float32, seed=7)
    loss, _ = chunked_info_nce(z.bfloat16(), ids, 0.1)
    expected, _ = chunked_info_nce(z.bfloat16().float(), ids, 0.1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)


def test_module_is_a_drop_in_for_info_nce_loss():
    dense = InfoNCELoss(0.2, learnable_temperature=True)
    chunked = ChunkedInfoNCELoss(0.2, learnable_temperature=True)
    chunked.load_state_dict(dense.state_dict())
    assert chunked.state_dict().keys() == dense.state_dict().keys()
    z, ids = _views(50, 8, torch.float32, seed=8)
    assert chunked(z, ids).metrics.keys() == dense(z, ids).metrics.keys()


def test_saves_no_similarity_matrix_for_backward():
    rows, dim = 512, 8
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    z, ids = _views(rows, dim, torch.float32, seed=9)
    z.requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, _ = chunked_info_nce(z, ids, 0.1, block_size=64)
    loss.backward()
    assert saved and max(saved) <= rows * dim


@pytest.mark.slow
def test_peak_memory_stays_far_below_the_dense_matrix(tmp_path):
    # 8192 views: the dense similarity matrix alone is 256 MiB in float32.
    script = textwrap.dedent(
        """
        import json, re, sys
        from pathlib import Path
        import torch
        from scicontrast.models.chunked_loss import chunked_info_nce
        torch.set_num_threads(1)
        def kib(key):
            status = Path("/proc/self/status").read_text()
            return int(re.search(rf"^{key}:\\s+(\\d+) kB", status, re.M).group(1))
        z = torch.randn(8192, 16, requires_grad=True)
        ids = torch.arange(8192) // 2
        before = kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        loss, _ = chunked_info_nce(z, ids, 0.1, block_bytes=32 * 2**20)
        loss.backward()
        print(json.dumps({"peak_mib": (kib("VmHWM") - before) / 1024}))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    if completed.returncode != 0 and "clear_refs" in completed.stderr:
        pytest.skip("the kernel does not allow resetting the peak resident set size")
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["peak_mib"] < 96


def test_bad_input_is_rejected():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="group_ids"):
        chunked_info_nce(z, torch.arange(3), 0.1)
    with pytest.raises(ValueError, match=r"z must have shape"):
        chunked_info_nce(z[0], torch.arange(3), 0.1)
    with pytest.raises(ConfigError, match="temperature"):
        chunked_info_nce(z, torch.arange(4), -1.0)
    with pytest.raises(ValueError, match="block_size"):
        chunked_info_nce(z, torch.tensor([0, 0, 1, 1]), 0.1, block_size=0)
    with pytest.raises(ValueError, match="positive_pairs"):
        chunked_info_nce(z, torch.arange(4), 0.1, positive_pairs=torch.tensor([[0], [9]]))
    with pytest.raises(ValueError, match="z1 and z2"):
        scicontrast.models.nt_xent(z, z[:3], 0.1)


def test_benchmark_report_judges_the_targets():
    bench = load_benchmark("loss_bench")
    rate = 1e11
    floor = bench.floor_seconds(8192, rate)
    report = {
        "matmul_flops_per_second": rate,
        "agreement": {"lightly": {"float32": 2e-5, "float64": 1e-14}, "pml": "not installed"},
        "cells": [
            {
                "method": "scicontrast",
                "n": 8192,
                "status": "ok",
                "seconds": 1.4 * floor,
                "cpu_seconds": 1.0,
                "peak_mib": 500.0,
            },
            {
                "method": "lightly",
                "n": 8192,
                "status": "ok",
                "seconds": 2.0 * floor,
                "cpu_seconds": 1.0,
                "peak_mib": 4000.0,
            },
            {"method": "pml", "n": 8192, "status": "OOM"},
        ],
    }
    assert floor == pytest.approx(12 * 16384**2 * 128 / rate)
    lines = bench.target_lines(report)
    assert "lightly agrees with the dense loss in float32 (2.0e-05 <= 1e-05): FAIL" in lines
    assert any(line.endswith("float64 (1.0e-14 <= 1e-10): PASS") for line in lines)
    assert "N=8192: 1.43x faster than lightly (>= 2x): FAIL" in lines
    assert "N=8192: 1.40x the floor (<= 1.5x): PASS" in lines
    assert "N=8192: peak 0.125 of lightly's (<= 0.1): FAIL" in lines
    rows = bench.table_rows(report)
    assert rows[2][:3] == ["8192", "pml", "OOM"]
