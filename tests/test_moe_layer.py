"""Router, layer and auxiliary losses of the MoE layer (plain PyTorch, no ESPnet)."""

import math
from collections import Counter

import pytest
import torch

from espnet_omni.analysis.routing_stats import decision_nmi, router_entropy, routing_health
from espnet_omni.moe.experts import Experts
from espnet_omni.moe.layer import MoEFeedForward
from espnet_omni.moe.losses import expert_load, load_balancing_loss, router_z_loss
from espnet_omni.moe.router import Router, RouterOutput


def routing_from_probs(probs, mask=None, top_k=1):
    probs = probs.float()
    gate, index = probs.topk(top_k, dim=-1)
    return RouterOutput(probs.log(), probs, index, gate, mask)


@pytest.mark.parametrize("num_experts", [2, 4, 8])
def test_load_balancing_loss_is_one_when_uniform_and_e_when_collapsed(num_experts):
    tokens = 16 * num_experts
    uniform = torch.full((tokens, num_experts), 1.0 / num_experts)
    # Equal probabilities, assignments spread evenly over experts.
    index = torch.arange(tokens).remainder(num_experts)[:, None]
    even = RouterOutput(uniform.log(), uniform, index, uniform[:, :1], None)
    assert load_balancing_loss(even).item() == pytest.approx(1.0)

    collapsed = torch.zeros(tokens, num_experts)
    collapsed[:, 2 % num_experts] = 1.0
    assert load_balancing_loss(routing_from_probs(collapsed)).item() == pytest.approx(num_experts)


def test_padding_changes_neither_losses_nor_statistics():
    torch.manual_seed(0)
    logits = torch.randn(30, 4)
    real = RouterOutput(logits, logits.softmax(-1), logits.argmax(-1, keepdim=True),
                        logits.softmax(-1).max(-1, keepdim=True).values, None)
    # 20 padded frames, all confidently routed to expert 0 with huge logits.
    pad_logits = torch.cat([logits, torch.tensor([[50.0, 0, 0, 0]]).repeat(20, 1)])
    pad_probs = pad_logits.softmax(-1)
    padded = RouterOutput(
        pad_logits, pad_probs, pad_logits.argmax(-1, keepdim=True),
        pad_probs.max(-1, keepdim=True).values,
        torch.cat([torch.ones(30, dtype=torch.bool), torch.zeros(20, dtype=torch.bool)]),
    )
    for fn in (load_balancing_loss, router_z_loss, expert_load):
        torch.testing.assert_close(fn(real), fn(padded))
    health_real, health_padded = routing_health([real, real], [1, 2]), routing_health([padded, padded], [1, 2])
    assert health_real.keys() == health_padded.keys()
    for key in health_real:
        torch.testing.assert_close(health_real[key], health_padded[key], msg=key)


def test_z_loss_is_mean_squared_logsumexp():
    logits = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    out = routing_from_probs(logits.softmax(-1))
    out.logits = logits
    expected = (torch.logsumexp(logits, -1) ** 2).mean()
    torch.testing.assert_close(router_z_loss(out), expected)


@pytest.mark.parametrize("top_k,renormalize", [(1, False), (2, False), (2, True)])
def test_router_outputs_follow_the_linear_softmax_topk_definition(top_k, renormalize):
    torch.manual_seed(0)
    router = Router(16, 8, top_k=top_k, renormalize=renormalize)
    torch.nn.init.normal_(router.weight)  # spread logits so the top-k order is unambiguous
    x = torch.randn(30, 16)
    out = router(x)
    logits = x @ router.weight.t()
    probs = logits.softmax(-1)
    gate, index = probs.topk(top_k, dim=-1)
    if renormalize:
        gate = gate / gate.sum(-1, keepdim=True)
    assert out.logits.shape == out.probs.shape == (30, 8)
    assert out.expert_index.shape == out.gate.shape == (30, top_k)
    torch.testing.assert_close(out.logits, logits)
    torch.testing.assert_close(out.probs, probs)
    assert torch.equal(out.expert_index, index)
    torch.testing.assert_close(out.gate, gate)


def test_top1_gate_is_raw_probability_and_router_learns_from_task_loss():
    torch.manual_seed(0)
    router, experts = Router(8, 4), Experts(4, 8, 16)
    x = torch.randn(20, 8)
    routing = router(x)
    torch.testing.assert_close(routing.gate[:, 0], routing.probs.max(-1).values)
    assert (routing.gate < 1).all()
    experts(x, routing.expert_index, routing.gate).pow(2).sum().backward()
    assert router.weight.grad.abs().sum() > 0


def test_router_runs_in_float32_under_autocast():
    router = Router(8, 4)
    x = torch.randn(10, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = router(x.bfloat16())
    assert out.logits.dtype == out.probs.dtype == out.gate.dtype == torch.float32


@pytest.mark.parametrize("top_k", [1, 2])
def test_layer_under_cpu_autocast_matches_float32(top_k):
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(16, 4, top_k=top_k), Experts(4, 16, 32))
    x = torch.randn(2, 10, 16)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    reference, _ = layer(x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = layer(x, mask)
    assert out.dtype == torch.float32
    assert (out[1, 7:] == 0).all()
    torch.testing.assert_close(out, reference, atol=0.05, rtol=0.05)


def test_jitter_only_in_training_and_out_of_place():
    torch.manual_seed(0)
    router = Router(8, 4, jitter_eps=0.5)
    x = torch.randn(50, 8)
    clean = x.clone()
    router.train()
    a, b = router(x).logits, router(x).logits
    assert not torch.equal(a, b)
    assert torch.equal(x, clean)
    router.eval()
    torch.testing.assert_close(router(x).logits, router(x).logits)


def test_eval_capacity_is_separate():
    layer = MoEFeedForward(Router(4, 2), Experts(2, 4, 8), capacity_factor=0.1,
                           eval_capacity_factor=None)
    layer.router.weight.data.zero_()
    layer.router.weight.data[0] = 10.0
    h = torch.rand(1, 12, 4) + 0.1
    layer.train()
    dropped_in_training = (layer(h)[0][0] == 0).all(-1).sum()
    layer.eval()
    dropped_in_eval = (layer(h)[0][0] == 0).all(-1).sum()
    assert dropped_in_training > 0 and dropped_in_eval == 0


def test_padded_tokens_are_not_dispatched():
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(8, 4), Experts(4, 8, 16))
    x = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    y, _ = layer(x, mask)
    assert torch.equal(y[1, 3:], torch.zeros(3, 8))
    y_nomask, _ = layer(x)
    torch.testing.assert_close(y[mask], y_nomask[mask])


def test_nmi_is_one_for_identical_and_zero_for_independent_decisions():
    n = 4000
    a = torch.arange(n).remainder(4)
    b = torch.div(torch.arange(n), 4, rounding_mode="floor").remainder(4)
    eye = torch.eye(4)
    ra, rb = routing_from_probs(eye[a]), routing_from_probs(eye[b])
    perm = routing_from_probs(eye[(a + 1) % 4])
    assert decision_nmi(ra, perm).item() == pytest.approx(1.0, abs=1e-6)
    assert decision_nmi(ra, rb).item() == pytest.approx(0.0, abs=1e-6)


def test_routing_statistics_match_counts_made_by_hand():
    """NMI and entropy of random decisions with padding, against Python counting over the
    real tokens only."""
    torch.manual_seed(0)
    num_tokens, num_experts = 300, 4
    mask = torch.rand(num_tokens) > 0.3
    first = routing_from_probs(torch.randn(num_tokens, num_experts).softmax(-1), mask)
    # The second layer agrees with the first on about half the tokens.
    agree = torch.rand(num_tokens) > 0.5
    second_logits = torch.randn(num_tokens, num_experts)
    second_logits[agree] = 5.0 * first.probs[agree]
    second = routing_from_probs(second_logits.softmax(-1), mask)
    real = mask.nonzero().squeeze(1).tolist()
    pairs = Counter((int(first.expert_index[t, 0]), int(second.expert_index[t, 0])) for t in real)
    a, b = Counter(), Counter()
    for (i, j), count in pairs.items():
        a[i] += count
        b[j] += count

    def entropy(counter):
        n = sum(counter.values())
        return -sum(c / n * math.log(c / n) for c in counter.values())

    want = (entropy(a) + entropy(b) - entropy(pairs)) / math.sqrt(entropy(a) * entropy(b))
    assert 0.1 < want < 0.9
    assert decision_nmi(first, second).item() == pytest.approx(want, rel=1e-5)
    want_entropy = sum(
        -sum(p * math.log(p) for p in first.probs[t].tolist()) for t in real
    ) / len(real)
    assert router_entropy(first).item() == pytest.approx(want_entropy, rel=1e-5)
    # One layer sending everything to one expert: the information is undefined, reported as 0.
    collapsed = routing_from_probs(torch.eye(num_experts)[[0] * num_tokens], mask)
    assert decision_nmi(first, collapsed).item() == 0.0


def test_router_losses_and_statistics_never_read_the_device():
    """The losses and statistics run every training step: on the meta device, where any read
    of tensor data fails, they all compute."""
    router = Router(16, 4).to("meta")
    mask = torch.ones(10, dtype=torch.bool, device="meta")
    routing = [router(torch.empty(10, 16, device="meta"), mask) for _ in range(3)]
    for loss in (load_balancing_loss, router_z_loss):
        assert loss(routing[0]).device.type == "meta"
    stats = routing_health(routing, [1, 2, 3])
    assert {value.device.type for value in stats.values()} == {"meta"}
    assert "route_nmi" in stats
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.bincount(routing[0].expert_index[:, 0])  # what the test would catch


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_experts=0), "num_experts"),
        (dict(num_experts=2, top_k=3), "top_k"),
        (dict(num_experts=2, jitter_eps=-1.0), "router_jitter"),
    ],
)
def test_router_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Router(8, **kwargs)


@pytest.mark.parametrize("field", ["capacity_factor", "eval_capacity_factor"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_capacity_must_be_positive(field, value):
    with pytest.raises(ValueError, match=field):
        MoEFeedForward(Router(8, 2), Experts(2, 8, 8), **{field: value})


def test_greedy_ctc_collapses_repeats_drops_blanks_and_respects_lengths():
    from espnet_omni.greedy_ctc import greedy_ctc

    best = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 3], [2, 0, 0, 2, 3, 3, 3, 3]])
    scores = torch.nn.functional.one_hot(best, 4).float()
    assert greedy_ctc(scores, torch.tensor([8, 5]), blank=0) == [[1, 1, 2, 3], [2, 2, 3]]
