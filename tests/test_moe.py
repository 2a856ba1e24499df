"""Router, dispatch and auxiliary losses of the MoE layer (plain PyTorch, no ESPnet)."""

import copy
import math
from collections import Counter

import pytest
import torch
from torch.nn.utils import prune

from espnet_omni.analysis.routing_stats import decision_nmi, router_entropy, routing_health
from espnet_omni.moe import fused_experts
from espnet_omni.moe.experts import Experts, FeedForward
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


def naive_moe(x, experts, index, gate):
    """Per-token reference: y_t = sum_j gate[t, j] * expert_{index[t, j]}(x_t)."""
    out = torch.zeros_like(x)
    for t in range(x.size(0)):
        for j in range(index.size(1)):
            out[t] += gate[t, j] * experts.experts[int(index[t, j])](x[t : t + 1])[0]
    return out


@pytest.mark.parametrize("top_k", [1, 2])
def test_dropless_dispatch_matches_per_token_reference(top_k):
    torch.manual_seed(0)
    router, experts = Router(8, 4, top_k=top_k), Experts(4, 8, 16)
    x = torch.randn(37, 8)
    routing = router(x)
    out = experts(x, routing.expert_index, routing.gate)
    torch.testing.assert_close(out, naive_moe(x, experts, routing.expert_index, routing.gate))


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


def test_capacity_drops_overflow_and_leaves_only_the_residual():
    torch.manual_seed(0)
    experts = Experts(2, 4, 8)
    x = torch.randn(10, 4)
    index = torch.zeros(10, 1, dtype=torch.long)  # every token wants expert 0
    index[8:] = 1
    gate = torch.full((10, 1), 0.5)
    capacity = 5  # ceil(1.0 * 10 assignments / 2 experts)
    out = experts(x, index, gate, capacity_factor=1.0)
    reference = naive_moe(x, experts, index, gate)
    torch.testing.assert_close(out[:capacity], reference[:capacity])  # first come, first served
    assert torch.equal(out[capacity:8], torch.zeros(8 - capacity, 4))  # dropped: exactly 0
    torch.testing.assert_close(out[8:], reference[8:])

    # In a block, a dropped token's output is its residual.
    layer = MoEFeedForward(Router(4, 2), experts, capacity_factor=0.1)
    layer.router.weight.data.zero_()
    layer.router.weight.data[0] = 10.0  # route every token to expert 0 (positive inputs)
    h = x.abs()[None]
    y, routing = layer(h)
    kept = 1  # ceil(0.1 * 10 / 2): at least one slot
    assert (y[0, kept:] == 0).all() and (y[0, :kept] != 0).any()


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


def test_every_expert_gets_a_gradient_zero_when_idle():
    torch.manual_seed(0)
    experts = Experts(4, 8, 16)
    x = torch.randn(12, 8)
    index = torch.tensor([0, 1] * 6)[:, None]  # experts 2 and 3 idle
    experts(x, index, torch.ones(12, 1)).sum().backward()
    for e, expert in enumerate(experts.experts):
        for p in expert.parameters():
            assert p.grad is not None
            assert (p.grad.abs().sum() > 0) == (e < 2)


@pytest.mark.parametrize("top_k,padding", [(1, False), (1, True), (2, True)])
def test_looped_dispatch_gradients_pass_gradcheck(top_k, padding):
    """The training path's dispatch against finite differences, for the input, the gates and
    every expert parameter; expert 3 gets no token."""
    torch.manual_seed(0)
    experts = Experts(4, 4, 6).double()
    names = [name for name, _ in experts.named_parameters()]
    index = torch.stack([torch.arange(9) % 3, (torch.arange(9) + 1) % 3], -1)[:, :top_k]
    mask = torch.arange(9) < 6 if padding else None
    x = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    gate = torch.rand(9, top_k, dtype=torch.float64, requires_grad=True)

    def run(x, gate, *params):
        return torch.func.functional_call(
            experts, dict(zip(names, params)), (x, index, gate, mask)
        )

    params = tuple(p.detach().requires_grad_() for p in experts.parameters())
    assert torch.autograd.gradcheck(run, (x, gate, *params))
    out = run(x, gate, *params)
    if padding:
        assert torch.equal(out[6:], torch.zeros_like(out[6:]))
    out.sum().backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in params[12:16])  # expert 3


def autograd_nodes(tensor):
    """Type names of the autograd graph's nodes behind ``tensor``."""
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("activation", ["relu", "gelu", "swish", "tanh"])
@pytest.mark.parametrize("top_k,capacity", [(1, None), (1, 0.7), (2, None), ("dense", None)])
def test_fused_training_path_matches_the_modules(activation, top_k, capacity, monkeypatch):
    """Training through fused_experts (hand-written backward) against the same layer run
    through its FeedForward modules: outputs and every gradient, with padding; "dense" is one
    FeedForward, as in the dense twin."""
    torch.manual_seed(0)
    if top_k == "dense":
        layer = FeedForward(8, 16, activation_type=activation)
    else:
        layer = MoEFeedForward(
            Router(8, 4, top_k=top_k),
            Experts(4, 8, 16, activation_type=activation),
            capacity_factor=capacity,
        )
    x = torch.randn(3, 7, 8)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 5, 2])[:, None]
    grad = torch.linspace(-1, 1, x.numel()).view_as(x)

    def run():
        xi = x.clone().requires_grad_()
        layer.zero_grad(set_to_none=True)
        y = layer(xi) if top_k == "dense" else layer(xi, mask)[0]
        nodes = autograd_nodes(y)
        y.backward(grad)
        return [y, xi.grad] + [p.grad for p in layer.parameters()], nodes

    fused, nodes = run()
    assert "_ExpertsOnSortedRowsBackward" in nodes
    monkeypatch.setattr(fused_experts, "applies", lambda experts, x: False)
    modules, nodes = run()
    assert "_ExpertsOnSortedRowsBackward" not in nodes
    for got, want in zip(fused, modules):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    if top_k != "dense":
        assert torch.equal(fused[0][~mask], torch.zeros_like(fused[0][~mask]))


def test_fused_dropout_drops_with_probability_p_and_rescales():
    """With identity weights and positive inputs the FFN's output is dropout(x)."""
    torch.manual_seed(0)
    ff = FeedForward(64, 64, dropout_rate=0.3).train()
    with torch.no_grad():
        for linear in (ff.w_1, ff.w_2):
            linear.weight.copy_(torch.eye(64))
            linear.bias.zero_()
    x = (torch.rand(500, 64) + 0.5).requires_grad_()
    y = ff(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.01
    torch.testing.assert_close(y[kept], x[kept] / 0.7)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / 0.7)  # the same mask in backward
    assert not torch.equal(ff(x) != 0, kept)  # a fresh mask on every call
    ff.eval()
    torch.testing.assert_close(ff(x), x)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_fused_dropout_gradients_pass_gradcheck(activation):
    """The hand-written backward with dropout (the same mask on every call) against finite
    differences; ReLU recovers both masks from the hidden units, GELU keeps dropout's."""
    torch.manual_seed(0)
    experts = Experts(3, 4, 6, dropout_rate=0.5, activation_type=activation).double().train()
    names = [name for name, _ in experts.named_parameters()]
    index = (torch.arange(8) % 3)[:, None]
    x = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    gate = torch.rand(8, 1, dtype=torch.float64, requires_grad=True)

    def run(x, gate, *params):
        torch.manual_seed(0)
        return torch.func.functional_call(experts, dict(zip(names, params)), (x, index, gate))

    params = tuple(p.detach().requires_grad_() for p in experts.parameters())
    with torch.no_grad():
        no_dropout = experts.eval()(x, index, gate)
    experts.train()
    assert not torch.allclose(run(x, gate, *params), no_dropout)  # dropout was applied
    assert torch.autograd.gradcheck(run, (x, gate, *params))


@pytest.mark.parametrize("activation,saved_hidden_copies", [("relu", 1), ("gelu", 2)])
def test_fused_dropout_memory_saved_for_backward(activation, saved_hidden_copies):
    """Beyond the rows, ReLU with dropout saves the hidden units alone; GELU also saves its
    input (and dropout's mask)."""
    ff = FeedForward(8, 32, dropout_rate=0.1, activation_type=activation).train()
    rows = torch.randn(50, 8, requires_grad=True)
    saved = {}

    def pack(tensor):
        if not isinstance(tensor, torch.nn.Parameter):
            saved[tensor.untyped_storage().data_ptr()] = tensor
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        ff(rows)
    float_shapes = sorted(tuple(t.shape) for t in saved.values() if t.is_floating_point())
    assert float_shapes == sorted([(50, 8)] + [(50, 32)] * saved_hidden_copies)
    masks = [t for t in saved.values() if t.dtype == torch.bool]
    assert len(masks) == (0 if activation == "relu" else 1)


def bf16_exact(module):
    """Round a module's parameters to bfloat16 values, so bf16 GEMMs see them exactly."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.bfloat16().float())
    return module


@pytest.mark.parametrize("top_k,capacity", [(1, None), (2, None), (1, 0.6)])
def test_grouped_gemm_path_matches_looped_path(top_k, capacity):
    """The CUDA path (bf16 grouped GEMMs, offsets on the device) run on CPU."""
    torch.manual_seed(0)
    looped = bf16_exact(
        MoEFeedForward(Router(16, 4, top_k=top_k), Experts(4, 16, 32, grouped_gemm=False),
                       capacity_factor=capacity)
    )
    grouped = copy.deepcopy(looped)
    grouped.experts.grouped_gemm = True
    x = torch.randn(3, 7, 16).bfloat16().float()
    mask = torch.arange(7)[None, :] < torch.tensor([7, 5, 2])[:, None]
    outputs = []
    for layer in (looped, grouped):
        xi = x.clone().requires_grad_()
        y, _ = layer(xi, mask)
        y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
        outputs.append((y, xi.grad, [p.grad for p in layer.parameters()]))
    (y_ref, gx_ref, gp_ref), (y, gx, gp) = outputs
    torch.testing.assert_close(y, y_ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gx, gx_ref, rtol=3e-2, atol=3e-2)
    for g, g_ref in zip(gp, gp_ref):
        torch.testing.assert_close(g, g_ref, rtol=3e-2, atol=3e-2)
    # Rows past the last offset are undefined inside grouped_mm; padding must stay exactly 0
    # in the output and in the input gradient.
    assert torch.equal(y[~mask], torch.zeros_like(y[~mask]))
    assert torch.equal(gx[~mask], torch.zeros_like(gx[~mask]))
    if capacity is not None:
        dropped = (y_ref == 0).all(-1) & mask
        assert dropped.any() and torch.equal(dropped, (y == 0).all(-1) & mask)


@pytest.mark.parametrize("capacity", [None, 1.0])
def test_grouped_gemm_path_never_reads_the_device(capacity):
    """On the meta device any read of tensor data fails: the grouped path does none."""
    layer = MoEFeedForward(Router(16, 4, top_k=2), Experts(4, 16, 32, grouped_gemm=True),
                           capacity_factor=capacity).to("meta")
    x = torch.empty(2, 5, 16, device="meta", requires_grad=True)
    y, _ = layer(x, torch.ones(2, 5, dtype=torch.bool, device="meta"))
    y.backward(torch.empty_like(y))
    assert x.grad.shape == x.shape
    layer.experts.grouped_gemm = False  # the looped CPU path reads its split sizes
    with pytest.raises((RuntimeError, NotImplementedError)):
        layer(x, torch.ones(2, 5, dtype=torch.bool, device="meta"))


def test_grouped_gemm_needs_aligned_sizes():
    with pytest.raises(ValueError, match="divisible by 8"):
        Experts(4, 12, 32, grouped_gemm=True)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_prepacked_inference_matches_and_follows_weight_updates(activation):
    torch.manual_seed(0)
    ff = FeedForward(16, 64, dropout_rate=0.5, activation_type=activation).eval()
    x = torch.randn(5, 16)
    with torch.enable_grad():
        reference = ff(x)  # autograd on: the ordinary path
    with torch.no_grad():
        out = ff(x)
    assert getattr(ff.w_1, "_prepacked", None) is not None  # the packed path ran
    torch.testing.assert_close(out, reference)
    with torch.no_grad():
        ff.w_2.weight.mul_(-2.0)  # an in-place update (optimizer step, load_state_dict)
        torch.testing.assert_close(ff(x), ff.w_2(ff.activation(ff.w_1(x))))
    ff.load_state_dict(FeedForward(16, 64).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ff(x), ff.w_2(ff.activation(ff.w_1(x))))
    assert "_prepacked" not in "".join(ff.state_dict())
    ff.train()  # training mode keeps dropout: never the packed path
    with torch.no_grad():
        assert not torch.equal(ff(x), ff(x))


@pytest.mark.parametrize(
    "top_k,capacity,activation,size",
    [(1, None, "relu", 16), (2, None, "relu", 16), (1, 0.6, "gelu", 16), (2, 0.6, "relu", 16),
     (1, None, "swish", 12), (2, None, "tanh", 16), (1, 0.6, "relu", 10), (2, None, "gelu", 10)],
)
def test_cpu_inference_path_matches_autograd_path(top_k, capacity, activation, size):
    # sizes 12 and 16: all experts in two grouped_mm calls on stacked weights with the biases
    # folded in (nonzero biases: nn.Linear's initialisation); size 10 (rows not 16-byte
    # aligned for grouped_mm): one prepacked FFN call per expert.
    torch.manual_seed(0)
    layer = MoEFeedForward(
        Router(size, 6, top_k=top_k), Experts(6, size, 2 * size, activation_type=activation),
        eval_capacity_factor=capacity,
    ).eval()
    experts = layer.experts.experts
    x = torch.randn(3, 7, size)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 5, 2])[:, None]
    with torch.enable_grad():
        reference, _ = layer(x, mask)  # the router's weight requires grad: the autograd path
    assert "_stacked_weights" not in experts.__dict__
    assert all(getattr(e.w_1, "_prepacked", None) is None for e in experts)
    with torch.no_grad():
        out, _ = layer(x, mask)
    if size % 4 == 0:
        assert "_stacked_weights" in experts.__dict__
    else:
        assert any(getattr(e.w_1, "_prepacked", None) is not None for e in experts)
    torch.testing.assert_close(out, reference)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    if capacity is not None:
        dropped = (reference == 0).all(-1) & mask
        assert dropped.any() and torch.equal(dropped, (out == 0).all(-1) & mask)


@pytest.mark.parametrize("chosen", [[3], [0, 5]])
def test_cpu_inference_path_with_experts_without_tokens(chosen):
    # Every token on one or two of the six experts: the others get empty groups.
    torch.manual_seed(0)
    experts = Experts(6, 8, 16).eval()
    x = torch.randn(11, 8)
    expert_index = torch.tensor(chosen).repeat(11)[:11, None]
    gate = torch.rand(11, 1)
    with torch.enable_grad():
        reference = experts(x.requires_grad_(), expert_index, gate)
    with torch.no_grad():
        out = experts(x, expert_index, gate)
    assert "_stacked_weights" in experts.experts.__dict__  # the inference path ran
    torch.testing.assert_close(out, reference)
    expected = torch.stack([experts.experts[e](row) for e, row in zip(expert_index[:, 0], x)])
    torch.testing.assert_close(out, expected * gate)


def test_stacked_inference_weights_follow_updates_and_stay_out_of_the_state_dict():
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(8, 4), Experts(4, 8, 16)).eval()
    x = torch.randn(2, 9, 8)

    def reference():
        with torch.enable_grad():
            return layer(x)[0]

    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], reference())
        layer.experts.experts[2].w_2.bias.add_(1.0)  # in place: the version counter changes
        torch.testing.assert_close(layer(x)[0], reference())
        layer.experts.experts[1].w_1.weight.mul_(-3.0)
        torch.testing.assert_close(layer(x)[0], reference())
        # New tensors (as .to() and assignment make): the storage address changes.
        layer.experts.experts[3].w_1.weight = torch.nn.Parameter(torch.randn(16, 8))
        torch.testing.assert_close(layer(x)[0], reference())
        layer.experts.experts[0].w_2.bias.data = torch.randn(8)
        torch.testing.assert_close(layer(x)[0], reference())
    layer.load_state_dict(MoEFeedForward(Router(8, 4), Experts(4, 8, 16)).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], reference())
    assert not any("stacked" in name for name in layer.state_dict())


class LowRankAdapted(torch.nn.Linear):
    """A Linear plus a trainable low-rank term, as LoRA wrappers (loralib.Linear) are."""

    def __init__(self, linear: torch.nn.Linear, rank: int = 2):
        super().__init__(linear.in_features, linear.out_features)
        self.load_state_dict(linear.state_dict())
        self.lora_a = torch.nn.Parameter(torch.randn(rank, linear.in_features) * 0.3)
        self.lora_b = torch.nn.Parameter(torch.randn(linear.out_features, rank) * 0.3)

    def forward(self, x):
        return super().forward(x) + x @ self.lora_a.t() @ self.lora_b.t()


def adapt_linears(feed_forwards):
    for ff in feed_forwards:
        ff.w_1, ff.w_2 = LowRankAdapted(ff.w_1), LowRankAdapted(ff.w_2)


@pytest.mark.parametrize("kind", ["moe", "dense"])
@pytest.mark.parametrize("training", [True, False])
def test_linear_subclasses_run_their_own_forward(kind, training):
    """The fast paths compute with a Linear's weight and bias; a layer that adds more (here a
    low-rank term, as LoRA does) must be run, in training and in inference."""
    torch.manual_seed(0)
    if kind == "moe":
        layer = MoEFeedForward(Router(16, 4), Experts(4, 16, 32))
        feed_forwards = list(layer.experts.experts)
    else:
        layer = FeedForward(16, 32)
        feed_forwards = [layer]
    adapt_linears(feed_forwards)
    layer.train(training)
    x = torch.randn(2, 9, 16)
    with torch.set_grad_enabled(training):
        out = layer(x)[0] if kind == "moe" else layer(x)

    def by_hand(ff, rows):
        return ff.w_2(ff.activation(ff.w_1(rows)))

    with torch.no_grad():
        if kind == "moe":
            tokens = x.view(-1, 16)
            routing = layer.router(tokens)
            want = torch.stack([
                gate * by_hand(feed_forwards[int(index)], token)
                for token, index, gate in zip(tokens, routing.expert_index[:, 0], routing.gate[:, 0])
            ])
        else:
            want = by_hand(layer, x)
    torch.testing.assert_close(out.reshape(want.shape), want)
    if training:
        out.square().sum().backward()
        low_rank = [p for ff in feed_forwards for p in (ff.w_1.lora_a, ff.w_2.lora_b)]
        assert all(p.grad is not None for p in low_rank)
        assert sum(p.grad.abs().sum() for p in low_rank) > 0


@pytest.mark.parametrize("training", [True, False])
def test_forward_hooks_on_experts_and_their_layers_fire(training):
    """A hook on an expert or on one of its Linear layers (to record what it computes) sees
    every call with that expert's tokens, in training and in inference."""
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(16, 4), Experts(4, 16, 32)).train(training)
    x = torch.randn(2, 9, 16)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.detach().clone()
        return hook

    expert = layer.experts.experts[1]
    expert.register_forward_hook(record("expert"))
    expert.w_1.register_forward_hook(record("w_1"))
    with torch.set_grad_enabled(training):
        layer(x)
    tokens = x.view(-1, 16)[layer.router(x.view(-1, 16)).expert_index[:, 0] == 1]
    assert tokens.size(0) > 0
    with torch.no_grad():
        torch.testing.assert_close(seen["w_1"], expert.w_1(tokens))
        torch.testing.assert_close(seen["expert"], expert.w_2(expert.activation(expert.w_1(tokens))))


def test_pruned_experts_use_their_masked_weights():
    """torch.nn.utils.prune keeps the Linear but recomputes its weight in a forward pre-hook."""
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(16, 4), Experts(4, 16, 32)).eval()
    x = torch.randn(2, 9, 16)
    tokens = x.view(-1, 16)
    with torch.no_grad():
        unpruned = layer(x)[0]
        for expert in layer.experts.experts:
            prune.l1_unstructured(expert.w_1, "weight", amount=0.5)
        pruned = layer(x)[0]
        routing = layer.router(tokens)
        reference = torch.stack([
            gate * ff.w_2(ff.activation(torch.nn.functional.linear(
                token, ff.w_1.weight_orig * ff.w_1.weight_mask, ff.w_1.bias)))
            for token, ff, gate in zip(
                tokens, (layer.experts.experts[int(e)] for e in routing.expert_index[:, 0]),
                routing.gate[:, 0])
        ])
    assert not torch.equal(pruned, unpruned)
    torch.testing.assert_close(pruned.view_as(reference), reference)


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16])
def test_dynamically_quantized_layers_run_their_own_forward(dtype):
    """ESPnet's --quantize_asr_model swaps every nn.Linear for a dynamically quantized one; the
    experts and the dense FFN then run those, also after float inference made the stacked and
    prepacked copies (which quantize_dynamic's deep copy carries along)."""
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(16, 4), Experts(4, 16, 64)).eval()
    dense = FeedForward(16, 64).eval()
    x = torch.randn(2, 9, 16)
    with torch.no_grad():
        want, want_dense = layer(x)[0], dense(x)
        assert "_stacked_weights" in layer.experts.experts.__dict__
        quantized = [torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=dtype)
                     for m in (layer, dense)]
        assert type(quantized[1].w_1) is not torch.nn.Linear
        got, got_dense = quantized[0](x)[0], quantized[1](x)
    tolerance = 0.05 if dtype == torch.qint8 else 2e-3
    for value, reference in ((got, want), (got_dense, want_dense)):
        assert not torch.equal(value, reference)  # the quantized weights were used
        torch.testing.assert_close(value, reference, rtol=tolerance, atol=tolerance)


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
    from espnet_omni.bin.asr_inference_ctc import greedy_ctc

    best = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 3], [2, 0, 0, 2, 3, 3, 3, 3]])
    scores = torch.nn.functional.one_hot(best, 4).float()
    assert greedy_ctc(scores, torch.tensor([8, 5]), blank=0) == [[1, 1, 2, 3], [2, 2, 3]]
