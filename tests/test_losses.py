"""InfoNCE on group ids: every form against an independent closed form, in float64.

The references here are written without the module's masks and logsumexp: hand loops over
the SupCon ``L_out`` formula, ``F.cross_entropy`` on hand-built logits, and the classic SimCLR
implementation that gathers the positive logit and the ``2N - 2`` negatives explicitly.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scicontrast.errors import ConfigError
from scicontrast.models.loss_metrics import alignment, uniformity
from scicontrast.models.losses import (
    InfoNCELoss,
    Temperature,
    contrastive_cross_entropy,
    dense_nt_xent,
)

TAU = 0.1
EXACT = {"rel": 1e-10, "abs": 1e-10}


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1)


def _supcon_l_out_by_hand(z: torch.Tensor, ids: list[int], tau: float) -> float:
    """Mean over anchors with a positive of -(1/|P|) sum_p log(exp(s_ap/tau) / sum_{k!=a} ...)."""
    z = _unit(z).tolist()
    cos = [[sum(x * y for x, y in zip(za, zk, strict=True)) for zk in z] for za in z]
    losses = []
    for a in range(len(z)):
        others = [k for k in range(len(z)) if k != a]
        positives = [k for k in others if ids[k] == ids[a]]
        if not positives:
            continue
        denominator = sum(math.exp(cos[a][k] / tau) for k in others)
        losses.append(
            -sum(math.log(math.exp(cos[a][p] / tau) / denominator) for p in positives)
            / len(positives)
        )
    return sum(losses) / len(losses)


def _reference_simclr_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR NT-Xent as usually written: positive logit first, then the 2N - 2 negatives."""
    n = z1.shape[0]
    z = _unit(torch.cat([z1, z2]))
    logits = z @ z.T / tau
    positive = torch.cat([torch.diagonal(logits, n), torch.diagonal(logits, -n)])
    negative_mask = ~torch.eye(2 * n, dtype=torch.bool)
    negative_mask[torch.arange(n), torch.arange(n) + n] = False
    negative_mask[torch.arange(n) + n, torch.arange(n)] = False
    negatives = logits[negative_mask].view(2 * n, 2 * n - 2)
    logits = torch.cat([positive[:, None], negatives], dim=1)
    return F.cross_entropy(logits, torch.zeros(2 * n, dtype=torch.long))


# --- in-batch form ---------------------------------------------------------------------------


def test_two_views_equal_cross_entropy_with_masked_diagonal():
    n = 6
    z = _randn(2 * n, 8)
    zn = _unit(z)
    logits = (zn @ zn.T / TAU).fill_diagonal_(-math.inf)
    targets = (torch.arange(2 * n) + n) % (2 * n)
    expected = F.cross_entropy(logits, targets)

    out = InfoNCELoss(TAU)(z, torch.arange(n).repeat(2))

    assert out.loss.item() == pytest.approx(expected.item(), **EXACT)
    assert out.metrics["num_negatives"] == 2 * n - 2
    assert out.metrics["anchors_without_positive"] == 0


def test_nt_xent_equals_in_batch_loss_and_reference_simclr():
    z1, z2 = _randn(5, 7, seed=1), _randn(5, 7, seed=2)
    in_batch = InfoNCELoss(TAU)(torch.cat([z1, z2]), torch.arange(5).repeat(2)).loss

    assert dense_nt_xent(z1, z2, TAU).item() == pytest.approx(in_batch.item(), **EXACT)
    assert dense_nt_xent(z1, z2, TAU).item() == pytest.approx(
        _reference_simclr_nt_xent(z1, z2, TAU).item(), **EXACT
    )
    # A wrong pairing must not pass: swapping two rows of z2 changes the loss.
    assert dense_nt_xent(z1, z2[[1, 0, 2, 3, 4]], TAU).item() != pytest.approx(
        in_batch.item(), **EXACT
    )


def test_several_positives_match_supcon_l_out_by_hand():
    ids = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3]  # groups of 3, 2, 1 (negative only) and 4 views
    z = _randn(len(ids), 5, seed=3)

    out = InfoNCELoss(TAU)(z, torch.tensor(ids))

    assert out.loss.item() == pytest.approx(_supcon_l_out_by_hand(z, ids, TAU), **EXACT)
    assert out.metrics["anchors_without_positive"] == 1
    # Negatives per counted anchor: M - 1 minus its positives, averaged over 9 anchors.
    assert out.metrics["num_negatives"] == pytest.approx((3 * 7 + 2 * 8 + 4 * 6) / 9, **EXACT)


def test_an_id_repeated_in_a_batch_acts_as_one_object_with_all_those_views():
    # Id 5 arrives three times (e.g. the same object drawn twice by the sampler): its three
    # rows are positives of each other, exactly like a group with three views.
    ids = [5, 9, 5, 7, 9, 5]
    z = _randn(len(ids), 4, seed=4)
    loss_fn = InfoNCELoss(TAU)

    out = loss_fn(z, torch.tensor(ids))
    relabelled = loss_fn(z, torch.tensor([0, 1, 0, 2, 1, 0]))

    assert out.loss.item() == pytest.approx(_supcon_l_out_by_hand(z, ids, TAU), **EXACT)
    assert out.loss.item() == pytest.approx(relabelled.loss.item(), **EXACT)
    assert out.metrics["anchors_without_positive"] == 1  # id 7
    assert out.metrics["num_negatives"] == pytest.approx((3 * 3 + 2 * 4) / 5, **EXACT)


def test_loss_does_not_depend_on_row_order():
    ids = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    z = _randn(len(ids), 6, seed=5)
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
    loss_fn = InfoNCELoss(TAU)

    out, permuted = loss_fn(z, ids), loss_fn(z[perm], ids[perm])

    assert permuted.loss.item() == pytest.approx(out.loss.item(), **EXACT)
    assert permuted.metrics == pytest.approx(out.metrics, **EXACT)
    # Permuting only the views (not their ids) is a different batch.
    assert loss_fn(z[perm], ids).loss.item() != pytest.approx(out.loss.item(), **EXACT)


def test_no_positive_in_batch_warns_and_returns_zero_loss_with_a_graph():
    z = _randn(4, 3, seed=6).requires_grad_()
    with pytest.warns(UserWarning, match="no anchor in this batch has a positive"):
        out = InfoNCELoss(TAU)(z, torch.arange(4))

    assert out.loss.item() == 0.0
    out.loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    assert out.metrics["anchors_without_positive"] == 4
    assert math.isnan(out.metrics["pos_sim"])


def test_anchor_without_valid_candidate_gives_zero_loss_and_finite_gradient():
    anchors = _unit(_randn(2, 3, seed=7)).requires_grad_()
    candidates = _unit(_randn(3, 3, seed=8))
    valid = torch.tensor([[True, True, True], [False, False, False]])
    positive = torch.tensor([[True, False, False], [False, False, False]])

    tau = torch.tensor(TAU, dtype=torch.float64, requires_grad=True)

    loss, has_positive = contrastive_cross_entropy(anchors, candidates, positive, valid, tau)
    loss.sum().backward()

    assert has_positive.tolist() == [True, False]
    assert loss[1].item() == 0.0
    assert torch.isfinite(anchors.grad).all() and torch.isfinite(tau.grad)
    assert torch.equal(anchors.grad[1], torch.zeros(3, dtype=torch.float64))


def test_float32_stays_finite_at_the_smallest_temperature():
    z = torch.ones(4, 3) + 1e-3 * torch.arange(12.0).view(4, 3)  # near-identical views
    out = InfoNCELoss(temperature=0.01)(z, torch.tensor([0, 0, 1, 1]))
    assert math.isfinite(out.metrics["loss"])
    assert out.metrics["loss"] == pytest.approx(math.log(3), rel=1e-3)


# --- gradient ------------------------------------------------------------------------------


def _closed_form_query_gradient(query, keys, target, tau):
    """(1/tau) (sum_i p_i k_i - k_t) with p = softmax(q . k / tau)."""
    p = torch.softmax(keys @ query / tau, dim=0)
    return (p @ keys - keys[target]) / tau


def test_core_gradient_wrt_the_normalised_query_is_the_closed_form():
    # Leaf = the normalised query itself (the core does not normalise), keys fixed.
    keys = _unit(_randn(6, 5, seed=9))
    query = _unit(_randn(1, 5, seed=10)).requires_grad_()
    target = 2
    positive = torch.zeros(1, 6, dtype=torch.bool)
    positive[0, target] = True

    loss, _ = contrastive_cross_entropy(query, keys, positive, torch.ones_like(positive), TAU)
    loss.sum().backward()

    expected = _closed_form_query_gradient(query.detach()[0], keys, target, TAU)
    torch.testing.assert_close(query.grad[0], expected, rtol=0, atol=1e-10)


def test_against_keys_gradient_wrt_a_unit_query_is_the_projected_closed_form():
    # against_keys normalises its inputs: for a unit-norm leaf q the gradient is the closed
    # form projected onto the tangent plane, (I - q q^T) g.
    keys = _unit(_randn(6, 5, seed=11))
    query = _unit(_randn(1, 5, seed=12)).requires_grad_()
    target = 4

    out = InfoNCELoss(TAU).against_keys(
        query, keys, query_ids=torch.tensor([target]), key_ids=torch.arange(6)
    )
    out.loss.backward()

    q = query.detach()[0]
    g = _closed_form_query_gradient(q, keys, target, TAU)
    expected = g - q * (q @ g)
    torch.testing.assert_close(query.grad[0], expected, rtol=0, atol=1e-10)


# --- temperature ---------------------------------------------------------------------------


def test_learnable_temperature_gets_the_finite_difference_gradient():
    z = _randn(8, 4, seed=13)
    ids = torch.arange(4).repeat(2)
    loss_fn = InfoNCELoss(0.2, learnable_temperature=True).double()
    log_inverse = loss_fn.temperature.log_inverse

    loss_fn(z, ids).loss.backward()

    def loss_at(value: float) -> float:
        with torch.no_grad():
            log_inverse.fill_(value)
            return loss_fn(z, ids).loss.item()

    theta, h = log_inverse.item(), 1e-6
    numeric = (loss_at(theta + h) - loss_at(theta - h)) / (2 * h)
    assert log_inverse.grad is not None and log_inverse.grad.item() != 0
    assert log_inverse.grad.item() == pytest.approx(numeric, rel=1e-6)


def test_learnable_temperature_starting_too_low_is_clamped_with_a_warning():
    with pytest.warns(UserWarning, match="below 1/max_inverse"):
        tau = Temperature(0.001, learnable=True)
    assert 1 / tau().item() <= 100 * (1 + 1e-6)
    assert 1 / tau().item() == pytest.approx(100, rel=1e-6)


def test_learnable_temperature_is_clamped_after_a_step_and_can_come_back():
    tau = Temperature(0.05, learnable=True)
    optimizer = torch.optim.SGD(tau.parameters(), lr=1000.0)

    tau().backward()  # minimising tau pushes log(1/tau) far above log(100)
    optimizer.step()
    assert 1 / tau().item() <= 100 * (1 + 1e-6)
    assert tau.log_inverse.item() <= math.log(100) + 1e-6

    # At the bound the parameter still gets a gradient and moves back when asked to.
    optimizer.zero_grad()
    (-tau()).backward()
    assert tau.log_inverse.grad.item() != 0
    for group in optimizer.param_groups:
        group["lr"] = 1.0
    optimizer.step()
    assert tau.log_inverse.item() < math.log(100) - 1e-3


def test_fixed_temperature_is_exact_and_bad_values_are_config_errors():
    assert Temperature(0.07)().item() == 0.07
    assert InfoNCELoss(0.001).temperature().item() == 0.001  # the bound is for learnable only
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ConfigError, match=r"loss\.temperature"):
            Temperature(bad)


# --- two-tower forms -----------------------------------------------------------------------


def test_symmetric_is_the_mean_of_both_directions_and_clip():
    a, b = _randn(5, 6, seed=14), _randn(5, 6, seed=15)
    loss_fn = InfoNCELoss(TAU)

    out = loss_fn.symmetric(a, b)

    both = 0.5 * (loss_fn.against_keys(a, b).loss + loss_fn.against_keys(b, a).loss)
    logits = _unit(a) @ _unit(b).T / TAU
    targets = torch.arange(5)
    clip = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    assert out.loss.item() == pytest.approx(both.item(), **EXACT)
    assert out.loss.item() == pytest.approx(clip.item(), **EXACT)
    assert out.metrics["num_negatives"] == 4
    assert out.metrics["uniformity"] == pytest.approx(
        uniformity(_unit(torch.cat([a, b]))).item(), **EXACT
    )


def test_symmetric_with_shared_ids_matches_supcon_by_hand():
    ids = [0, 0, 1, 2]  # rows 0 and 1 of both towers belong to the same object
    a, b = _randn(4, 3, seed=16), _randn(4, 3, seed=17)
    out = InfoNCELoss(TAU).symmetric(a, b, torch.tensor(ids))

    cos = (_unit(a) @ _unit(b).T).tolist()

    def direction(cos_rows):
        losses = []
        for i, row in enumerate(cos_rows):
            denominator = sum(math.exp(c / TAU) for c in row)
            positives = [j for j in range(4) if ids[j] == ids[i]]
            losses.append(
                -sum(math.log(math.exp(row[j] / TAU) / denominator) for j in positives)
                / len(positives)
            )
        return sum(losses) / len(losses)

    expected = 0.5 * (direction(cos) + direction([list(col) for col in zip(*cos, strict=True)]))
    assert out.loss.item() == pytest.approx(expected, **EXACT)


def test_bank_entries_only_add_to_the_denominator():
    queries, keys, bank = _randn(4, 5, seed=18), _randn(4, 5, seed=19), _randn(7, 5, seed=20)
    loss_fn = InfoNCELoss(TAU)

    with_bank = loss_fn.against_keys(queries, keys, bank=bank)
    without = loss_fn.against_keys(queries, keys)

    q, k, m = _unit(queries), _unit(keys), _unit(bank)
    positive_logit = (q * k).sum(1) / TAU
    key_terms = torch.logsumexp(q @ k.T / TAU, dim=1)
    bank_terms = torch.logsumexp(q @ m.T / TAU, dim=1)
    expected = (torch.logaddexp(key_terms, bank_terms) - positive_logit).mean()
    assert with_bank.loss.item() == pytest.approx(expected.item(), **EXACT)
    assert without.loss.item() == pytest.approx((key_terms - positive_logit).mean().item(), **EXACT)
    assert with_bank.metrics["num_negatives"] == 3 + 7
    # Only queries and keys make up the batch for uniformity.
    assert with_bank.metrics["uniformity"] == pytest.approx(
        uniformity(torch.cat([q, k])).item(), **EXACT
    )


def test_against_keys_with_ids_uses_every_key_of_the_same_object():
    queries, keys = _randn(2, 3, seed=21), _randn(3, 3, seed=22)
    out = InfoNCELoss(TAU).against_keys(
        queries, keys, query_ids=torch.tensor([1, 2]), key_ids=torch.tensor([1, 1, 2])
    )
    logits = _unit(queries) @ _unit(keys).T / TAU
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    expected = 0.5 * (-(log_p[0, 0] + log_p[0, 1]) / 2 - log_p[1, 2])
    assert out.loss.item() == pytest.approx(expected.item(), **EXACT)


# --- metrics -------------------------------------------------------------------------------


def test_metrics_match_direct_formulas():
    ids = [0, 0, 0, 1, 1, 2, 3, 3]
    z = _randn(len(ids), 5, seed=23)
    out = InfoNCELoss(TAU)(z, torch.tensor(ids))
    zn = _unit(z)

    pairs = [(i, j) for i in range(len(ids)) for j in range(len(ids)) if i != j]
    positive_pairs = [(i, j) for i, j in pairs if ids[i] == ids[j]]
    counted = {i for i, _ in positive_pairs}
    negative_pairs = [(i, j) for i, j in pairs if ids[i] != ids[j] and i in counted]
    pos_i, pos_j = map(list, zip(*positive_pairs, strict=True))
    neg_i, neg_j = map(list, zip(*negative_pairs, strict=True))
    mean_k = len(negative_pairs) / len(counted)

    m = out.metrics
    assert m["loss"] == pytest.approx(out.loss.item(), **EXACT)
    assert m["temperature"] == TAU
    assert m["num_negatives"] == pytest.approx(mean_k, **EXACT)
    assert m["mi_lower_bound"] == pytest.approx(math.log(mean_k + 1) - m["loss"], **EXACT)
    assert m["pos_sim"] == pytest.approx((zn[pos_i] * zn[pos_j]).sum(1).mean().item(), **EXACT)
    assert m["neg_sim"] == pytest.approx((zn[neg_i] * zn[neg_j]).sum(1).mean().item(), **EXACT)
    assert m["alignment"] == pytest.approx(alignment(zn[pos_i], zn[pos_j]).item(), **EXACT)
    assert m["uniformity"] == pytest.approx(uniformity(zn).item(), **EXACT)
    assert m["anchors_without_positive"] == 1
    assert all(isinstance(value, float) for value in m.values())


def test_perfectly_aligned_positives_have_zero_alignment_and_unit_similarity():
    z = torch.eye(3, dtype=torch.float64).repeat_interleave(2, dim=0)  # 2 identical views each
    m = InfoNCELoss(TAU)(z, torch.arange(3).repeat_interleave(2)).metrics
    assert m["alignment"] == 0.0
    assert m["pos_sim"] == 1.0
    assert m["neg_sim"] == 0.0


def test_alignment_and_uniformity_match_their_definitions():
    x, y = _unit(_randn(5, 3, seed=24)), _unit(_randn(5, 3, seed=25))
    assert alignment(x, y, alpha=3.0).item() == pytest.approx(
        sum(torch.linalg.vector_norm(x[i] - y[i]).item() ** 3 for i in range(5)) / 5, **EXACT
    )
    assert alignment(x, x).item() == 0.0
    terms = [
        math.exp(-2.0 * torch.sum((x[i] - x[j]) ** 2).item())
        for i in range(5)
        for j in range(5)
        if i != j
    ]
    assert uniformity(x).item() == pytest.approx(math.log(sum(terms) / len(terms)), **EXACT)
    assert uniformity(torch.ones(4, 3) / math.sqrt(3)).item() == pytest.approx(0.0, abs=1e-6)


# --- input checks --------------------------------------------------------------------------


def test_mismatched_shapes_are_rejected():
    loss_fn = InfoNCELoss()
    with pytest.raises(ValueError, match="group_ids"):
        loss_fn(torch.randn(4, 3), torch.arange(3))
    with pytest.raises(ValueError, match="z must have shape"):
        loss_fn(torch.randn(4), torch.arange(4))
    with pytest.raises(ValueError, match="same count"):
        loss_fn.against_keys(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="both query_ids and key_ids"):
        loss_fn.against_keys(torch.randn(3, 2), torch.randn(3, 2), query_ids=torch.arange(3))
    with pytest.raises(ValueError, match="bank"):
        loss_fn.against_keys(torch.randn(3, 2), torch.randn(3, 2), bank=torch.randn(5, 3))
    with pytest.raises(ValueError, match="z1 and z2"):
        dense_nt_xent(torch.randn(3, 2), torch.randn(4, 2))
