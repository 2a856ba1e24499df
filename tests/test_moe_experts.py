"""The experts: stacked weights, dispatch, every implementation against a per-token reference,
the dense FeedForward's fast paths, and loading the per-expert checkpoint layout."""

import copy

import pytest
import torch
from torch.nn.utils import prune

from espnet_omni.moe import eager_experts, grouped_mm_experts
from espnet_omni.moe.dispatch import sort_by_expert
from espnet_omni.moe.experts import Experts
from espnet_omni.moe.feed_forward import FeedForward
from espnet_omni.moe.layer import MoEFeedForward
from espnet_omni.moe.router import Router


def expert_ffn(experts, e, x):
    """Expert e of stacked ``experts`` on x (..., d), written out from its four tensors."""
    w_1, b_1, w_2, b_2 = experts.weights
    return experts.activation(x @ w_1[e] + b_1[e]) @ w_2[e] + b_2[e]


def naive_moe(x, experts, index, gate):
    """Per-token reference: y_t = sum_j gate[t, j] * expert_{index[t, j]}(x_t)."""
    out = torch.zeros_like(x)
    for t in range(x.size(0)):
        for j in range(index.size(1)):
            out[t] += gate[t, j] * expert_ffn(experts, int(index[t, j]), x[t])
    return out


# How each implementation is reached: (Experts' implementation, the hand-written backward on).
TRAINING_PATHS = {
    "eager": ("eager", True),  # the CPU training default
    "eager_autograd": ("eager", False),  # what runs under autocast
    "grouped_mm": ("grouped_mm", True),  # the GPU default, here in float32
}


def use_path(experts, path, monkeypatch):
    implementation, hand_written = TRAINING_PATHS[path]
    experts.implementation = implementation
    if not hand_written:
        monkeypatch.setattr(eager_experts, "has_hand_written_backward", lambda *args: False)


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


# ----------------------------------------------------------------------------- dispatch


def test_sort_by_expert_groups_rows_and_inverts_its_permutation():
    expert_index = torch.tensor([[2], [0], [2], [1], [0], [2]])
    mask = torch.tensor([True, True, True, True, False, True])
    dispatch = sort_by_expert(expert_index, 3, mask)
    assert dispatch.order.tolist() == [1, 3, 0, 2, 5, 4]  # stable, padding (token 4) last
    assert dispatch.offsets.tolist() == [1, 2, 5] and dispatch.offsets.dtype == torch.int32
    assert torch.equal(dispatch.order[dispatch.rank], torch.arange(6))
    assert dispatch.served.tolist() == mask.tolist()
    assert dispatch.expert.tolist() == [2, 0, 2, 1, 3, 2]
    top2 = sort_by_expert(torch.tensor([[1, 0], [0, 1]]), 2)
    assert top2.token.tolist() == [0, 1, 0, 1] and top2.served is None


def test_capacity_keeps_the_first_tokens_of_each_expert():
    expert_index = torch.tensor([[0], [0], [1], [0], [0], [1]])
    dispatch = sort_by_expert(expert_index, 2, capacity_factor=1.0)  # 3 slots each
    assert dispatch.served.tolist() == [True, True, True, True, False, True]
    assert dispatch.offsets.tolist() == [3, 5]


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


# ----------------------------------------------------------------------- implementations


@pytest.mark.parametrize("path", list(TRAINING_PATHS))
@pytest.mark.parametrize("top_k,capacity", [(1, None), (1, 0.7), (2, None), (2, 0.7)])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_every_implementation_trains_like_the_per_token_reference(
    path, top_k, capacity, activation, monkeypatch
):
    """Output, input gradient and every parameter's gradient against a per-token computation,
    with padding; padded and dropped tokens get exactly 0 in the output and input gradient."""
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(8, 4, top_k=top_k),
                           Experts(4, 8, 16, activation_type=activation),
                           capacity_factor=capacity)
    reference = copy.deepcopy(layer)
    use_path(layer.experts, path, monkeypatch)
    x = torch.randn(3, 7, 8)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 5, 2])[:, None]
    grad = torch.linspace(-1, 1, x.numel()).view_as(x)

    xi = x.clone().requires_grad_()
    y, routing = layer(xi, mask)
    y.backward(grad)

    xr = x.clone().requires_grad_()
    tokens = xr.view(-1, 8)
    routing_ref = reference.router(tokens, mask.view(-1))
    served = sort_by_expert(routing.expert_index, 4, mask.view(-1), capacity).served
    gate = routing_ref.gate * served.view(-1, top_k)
    want = naive_moe(tokens, reference.experts, routing_ref.expert_index, gate).view_as(x)
    want.backward(grad)

    torch.testing.assert_close(y, want)
    torch.testing.assert_close(xi.grad, xr.grad)
    for (name, p), p_ref in zip(layer.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, msg=name)
    assert torch.equal(y[~mask], torch.zeros_like(y[~mask]))
    assert torch.equal(xi.grad[~mask], torch.zeros_like(xi.grad[~mask]))
    if capacity is not None and top_k == 1:
        dropped = ~served.view(3, 7) & mask
        assert dropped.any() and (y[dropped] == 0).all()


@pytest.mark.parametrize("path", list(TRAINING_PATHS))
def test_every_expert_gets_a_gradient_zero_when_idle(path, monkeypatch):
    """Idle experts get zero gradients, not None (DDP then needs no find_unused_parameters)."""
    torch.manual_seed(0)
    experts = Experts(4, 8, 16)
    use_path(experts, path, monkeypatch)
    x = torch.randn(12, 8)
    index = torch.tensor([0, 1] * 6)[:, None]  # experts 2 and 3 idle
    experts(x, index, torch.ones(12, 1)).sum().backward()
    for p in experts.parameters():
        per_expert = p.grad.flatten(1).abs().sum(1)
        assert (per_expert > 0).tolist() == [True, True, False, False]


@pytest.mark.parametrize("top_k,padding", [(1, False), (1, True), (2, True)])
def test_hand_written_backward_passes_gradcheck(top_k, padding):
    """The CPU training path against finite differences, for the input, the gates and every
    weight; expert 3 gets no token."""
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
    assert "_ExpertsOnSortedRowsBackward" in autograd_nodes(run(x, gate, *params))
    assert torch.autograd.gradcheck(run, (x, gate, *params))
    out = run(x, gate, *params)
    if padding:
        assert torch.equal(out[6:], torch.zeros_like(out[6:]))
    out.sum().backward()
    assert all(torch.equal(p.grad[3], torch.zeros_like(p.grad[3])) for p in params)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_hand_written_dropout_gradients_pass_gradcheck(activation):
    """With dropout (the same mask on every call): ReLU recovers both masks from the hidden
    units, GELU keeps dropout's."""
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


def bf16_exact(module):
    """Round a module's parameters to bfloat16 values, so bf16 GEMMs see them exactly."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.bfloat16().float())
    return module


@pytest.mark.parametrize("top_k,capacity", [(1, None), (2, None), (1, 0.6)])
def test_grouped_mm_under_bf16_autocast_matches_eager(top_k, capacity):
    """The GPU path (float32 weights cast to bf16 with the first bias folded in, offsets on the
    device), run on CPU under bf16 autocast, against the eager path under the same autocast."""
    torch.manual_seed(0)
    eager = bf16_exact(
        MoEFeedForward(Router(16, 4, top_k=top_k),
                       Experts(4, 16, 32, implementation="eager"),
                       capacity_factor=capacity, eval_capacity_factor=capacity)
    )
    grouped = copy.deepcopy(eager)
    grouped.experts.implementation = "grouped_mm"
    x = torch.randn(3, 7, 16).bfloat16().float()
    mask = torch.arange(7)[None, :] < torch.tensor([7, 5, 2])[:, None]
    outputs = []
    for layer in (eager, grouped):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, _ = layer(xi, mask)
        y.float().backward(torch.linspace(-1, 1, y.numel()).view_as(y))
        outputs.append((y.float(), xi.grad, [p.grad for p in layer.parameters()]))
    (y_ref, gx_ref, gp_ref), (y, gx, gp) = outputs
    torch.testing.assert_close(y, y_ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gx, gx_ref, rtol=3e-2, atol=3e-2)
    for g, g_ref in zip(gp, gp_ref):
        torch.testing.assert_close(g, g_ref, rtol=3e-2, atol=3e-2)
    assert torch.equal(y[~mask], torch.zeros_like(y[~mask]))
    assert torch.equal(gx[~mask], torch.zeros_like(gx[~mask]))
    if capacity is not None:
        dropped = (y_ref == 0).all(-1) & mask
        assert dropped.any() and torch.equal(dropped, (y == 0).all(-1) & mask)


@pytest.mark.parametrize("path", list(TRAINING_PATHS))
def test_dropout_drops_with_probability_p_and_rescales(path, monkeypatch):
    """With identity weights, zero biases and positive inputs an expert's output is dropout(x),
    in every implementation (the grouped one under bf16 autocast, as on a GPU)."""
    torch.manual_seed(0)
    experts = Experts(1, 16, 16, dropout_rate=0.3).train()
    use_path(experts, path, monkeypatch)
    with torch.no_grad():
        experts.w_1.copy_(torch.eye(16))
        experts.w_2.copy_(torch.eye(16))
        experts.b_1.zero_()
        experts.b_2.zero_()
    x = (torch.rand(3000, 16) + 0.5).bfloat16().float().requires_grad_()
    index, gate = torch.zeros(3000, 1, dtype=torch.long), torch.ones(3000, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=path == "grouped_mm"):
        y = experts(x, index, gate).float()
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.015
    torch.testing.assert_close(y[kept], x.detach()[kept] / 0.7, rtol=1e-2, atol=1e-2)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / 0.7, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("capacity", [None, 1.0])
def test_grouped_mm_never_reads_the_device(capacity):
    """On the meta device any read of tensor data fails: the grouped path does none, in the
    folded form the GPU runs (float32 weights, bf16 GEMMs) and in the plain one."""
    layer = MoEFeedForward(Router(16, 4, top_k=2), Experts(4, 16, 32, implementation="grouped_mm"),
                           capacity_factor=capacity).to("meta")
    x = torch.empty(10, 16, device="meta", requires_grad=True)
    mask = torch.ones(10, dtype=torch.bool, device="meta")
    routing = layer.router(x, mask)
    dispatch = sort_by_expert(routing.expert_index, 4, mask, capacity)
    y = grouped_mm_experts.grouped_mm_experts(
        x, dispatch, routing.gate, layer.experts.weights, layer.experts.activation,
        layer.experts.dropout, torch.bfloat16,
    )
    y.backward(torch.empty_like(y))
    assert x.grad.shape == x.shape and layer.experts.w_1.grad.shape == (4, 16, 32)
    layer.experts.implementation = "eager"  # the eager path reads its slice lengths
    with pytest.raises((RuntimeError, NotImplementedError)):
        layer(x[None].bfloat16(), mask[None])


def test_encoder_training_step_never_reads_the_device():
    """The Omni-router encoder's forward and backward on the meta device (bf16 weights: the
    meta grouped_mm takes bf16 only): no host read anywhere in the encoder."""
    from espnet_omni.encoder import OmniRouterEncoder

    encoder = OmniRouterEncoder(
        80, output_size=64, attention_heads=4, linear_units=128, num_blocks=2, num_experts=4,
        input_layer="stack", experts_implementation="grouped_mm",
    ).to("meta", torch.bfloat16)
    xs = torch.empty(2, 40, 80, device="meta", dtype=torch.bfloat16)
    lengths = torch.empty(2, dtype=torch.long, device="meta")
    out, out_lengths, _ = encoder(xs, lengths)
    assert out.shape == (2, 10, 64) and out_lengths.shape == (2,)
    out.sum().backward()
    assert encoder.encoders[0].feed_forward.experts.w_1.grad.shape == (4, 64, 128)


def test_implementation_chosen_by_device_and_mode():
    experts = Experts(4, 16, 32)
    x = torch.randn(5, 16)
    assert experts.implementation_for(x) == ("eager", torch.float32)  # CPU training
    experts.eval()
    with torch.no_grad():
        assert experts.implementation_for(x) == ("grouped_mm", torch.float32)  # CPU inference
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert experts.implementation_for(x) == ("eager", torch.bfloat16)
    unaligned = Experts(4, 10, 32).eval()
    with torch.no_grad():
        assert unaligned.implementation_for(torch.randn(5, 10))[0] == "eager"
    experts.implementation = "grouped_mm"
    assert experts.implementation_for(x) == ("grouped_mm", torch.float32)


@pytest.mark.parametrize(
    "kwargs,message",
    [(dict(implementation="grouped"), "experts_implementation must be one of"),
     (dict(implementation="grouped_mm", input_size=12), "divisible by 8"),
     (dict(num_experts=0), "num_experts")],
)
def test_experts_reject_bad_options(kwargs, message):
    options = dict(num_experts=4, input_size=16, hidden_units=32) | kwargs
    with pytest.raises(ValueError, match=message):
        Experts(**options)


@pytest.mark.parametrize(
    "top_k,capacity,activation,size",
    [(1, None, "relu", 16), (2, None, "relu", 16), (1, 0.6, "gelu", 16), (2, 0.6, "relu", 16),
     (1, None, "swish", 12), (2, None, "tanh", 16), (1, 0.6, "relu", 10), (2, None, "gelu", 10)],
)
def test_cpu_inference_matches_the_training_path(top_k, capacity, activation, size):
    """float32 CPU inference (grouped GEMMs on the stacked weights; eager where rows are not
    16-byte aligned, size 10) against the same layer with autograd on."""
    torch.manual_seed(0)
    layer = MoEFeedForward(
        Router(size, 6, top_k=top_k), Experts(6, size, 2 * size, activation_type=activation),
        eval_capacity_factor=capacity,
    ).eval()
    x = torch.randn(3, 7, size)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 5, 2])[:, None]
    with torch.enable_grad():
        reference, _ = layer(x, mask)
    with torch.no_grad():
        out, _ = layer(x, mask)
        chosen = layer.experts.implementation_for(x.view(-1, size))[0]
    assert chosen == ("grouped_mm" if size % 4 == 0 else "eager")
    torch.testing.assert_close(out, reference)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    if capacity is not None:
        dropped = (reference == 0).all(-1) & mask
        assert dropped.any() and torch.equal(dropped, (out == 0).all(-1) & mask)


@pytest.mark.parametrize("chosen", [[3], [0, 5]])
def test_cpu_inference_with_experts_without_tokens(chosen):
    # Every token on one or two of the six experts: the others get empty groups.
    torch.manual_seed(0)
    experts = Experts(6, 8, 16).eval()
    x = torch.randn(11, 8)
    expert_index = torch.tensor(chosen).repeat(11)[:11, None]
    gate = torch.rand(11, 1)
    with torch.no_grad():
        out = experts(x, expert_index, gate)
    torch.testing.assert_close(out, naive_moe(x, experts, expert_index, gate).detach())


def test_pruned_experts_use_their_masked_weights():
    """torch.nn.utils.prune recomputes the pruned tensor in a forward pre-hook: every path
    reads it."""
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(16, 4), Experts(4, 16, 32))
    x = torch.randn(2, 9, 16)
    with torch.no_grad():
        unpruned = layer(x)[0]
    prune.l1_unstructured(layer.experts, "w_1", amount=0.5)
    for training in (True, False):
        layer.train(training)
        with torch.set_grad_enabled(training):
            pruned = layer(x)[0]
        with torch.no_grad():
            tokens = x.view(-1, 16)
            routing = layer.router(tokens)
            want = naive_moe(tokens, layer.experts, routing.expert_index, routing.gate)
        assert not torch.equal(pruned, unpruned)
        torch.testing.assert_close(pruned.view_as(want), want)


# ------------------------------------------------------------------- per-expert layout


class PerExpertLayout(torch.nn.Module):
    """The earlier layout of ``Experts``: one FeedForward module per expert."""

    def __init__(self, num_experts, input_size, hidden_units):
        super().__init__()
        self.experts = torch.nn.ModuleList(
            FeedForward(input_size, hidden_units) for _ in range(num_experts)
        )


def test_per_expert_checkpoints_load_into_the_stacked_layout():
    torch.manual_seed(0)
    old = PerExpertLayout(3, 8, 16)
    layer = MoEFeedForward(Router(8, 3), Experts(3, 8, 16))
    state = {f"experts.{k}": v for k, v in old.state_dict().items()}
    state["router.weight"] = layer.router.weight.detach().clone()
    layer.load_state_dict(state)  # strict: every key converted
    x = torch.randn(20, 8)
    routing = layer.router(x)
    want = torch.stack([
        gate * old.experts[int(e)].eval()(token)
        for token, e, gate in zip(x, routing.expert_index[:, 0], routing.gate[:, 0])
    ])
    with torch.no_grad():
        torch.testing.assert_close(layer.eval()(x[None])[0][0], want)


def test_per_expert_checkpoints_of_an_encoder_load_and_decode_the_same():
    from espnet_omni.encoder import OmniRouterEncoder

    torch.manual_seed(0)
    options = dict(output_size=16, attention_heads=2, linear_units=32, num_blocks=2,
                   num_experts=3, input_layer="linear")
    encoder = OmniRouterEncoder(8, **options).eval()
    state = {}
    for key, value in encoder.state_dict().items():
        stem, _, name = key.rpartition(".")
        if name in ("w_1", "w_2") and stem.endswith("experts"):
            for e, matrix in enumerate(value):
                state[f"{stem}.experts.{e}.{name}.weight"] = matrix.t().clone()
        elif name in ("b_1", "b_2") and stem.endswith("experts"):
            for e, bias in enumerate(value):
                state[f"{stem}.experts.{e}.w_{name[-1]}.bias"] = bias.clone()
        else:
            state[key] = value
    assert any(".experts.experts.2.w_2.weight" in key for key in state)
    loaded = OmniRouterEncoder(8, **options).eval()
    loaded.load_state_dict(state)
    xs, lengths = torch.randn(2, 6, 8), torch.tensor([6, 4])
    with torch.no_grad():
        torch.testing.assert_close(loaded(xs, lengths)[0], encoder(xs, lengths)[0])


def test_an_incomplete_per_expert_checkpoint_is_refused_by_name():
    state = PerExpertLayout(3, 8, 16).state_dict()
    del state["experts.1.w_2.bias"]
    with pytest.raises(RuntimeError, match=r'(?s)Missing key.*"w_1".*Unexpected.*experts.0.w_1'):
        Experts(3, 8, 16).load_state_dict(state)


# -------------------------------------------------------------------- dense FeedForward


@pytest.mark.parametrize("activation", ["relu", "gelu", "swish", "tanh"])
def test_dense_hand_written_training_matches_autograd(activation, monkeypatch):
    torch.manual_seed(0)
    ff = FeedForward(8, 16, activation_type=activation)
    x = torch.randn(3, 7, 8)
    grad = torch.linspace(-1, 1, x.numel()).view_as(x)

    def run():
        xi = x.clone().requires_grad_()
        ff.zero_grad(set_to_none=True)
        y = ff(xi)
        nodes = autograd_nodes(y)
        y.backward(grad)
        return [y, xi.grad] + [p.grad for p in ff.parameters()], nodes

    fused, nodes = run()
    assert "_ExpertsOnSortedRowsBackward" in nodes
    monkeypatch.setattr(eager_experts, "has_hand_written_backward", lambda *args: False)
    reference, nodes = run()
    assert "_ExpertsOnSortedRowsBackward" not in nodes
    for got, want in zip(fused, reference):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_dense_dropout_drops_with_probability_p_and_rescales():
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


@pytest.mark.parametrize("activation,saved_hidden_copies", [("relu", 1), ("gelu", 2)])
def test_dense_dropout_memory_saved_for_backward(activation, saved_hidden_copies):
    """Beyond the rows, ReLU with dropout saves the hidden units alone; GELU also saves its
    input (and dropout's mask). Weights (views of the parameters) are not counted."""
    ff = FeedForward(8, 32, dropout_rate=0.1, activation_type=activation).train()
    rows = torch.randn(50, 8, requires_grad=True)
    weights = {p.untyped_storage().data_ptr() for p in ff.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage().data_ptr()
        if storage not in weights:
            saved[storage] = tensor
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        ff(rows)
    float_shapes = sorted(tuple(t.shape) for t in saved.values() if t.is_floating_point())
    assert float_shapes == sorted([(50, 8)] + [(50, 32)] * saved_hidden_copies)
    masks = [t for t in saved.values() if t.dtype == torch.bool]
    assert len(masks) == (0 if activation == "relu" else 1)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_dense_cpu_inference_follows_weight_updates(activation):
    torch.manual_seed(0)
    ff = FeedForward(16, 64, dropout_rate=0.5, activation_type=activation).eval()
    x = torch.randn(5, 16)
    with torch.enable_grad():
        reference = ff(x)  # autograd on: the ordinary path
    with torch.no_grad():
        out = ff(x)
    assert getattr(ff.w_1, "_weight_transposed", None) is not None  # the inference path ran
    torch.testing.assert_close(out, reference)
    with torch.no_grad():
        ff.w_2.weight.mul_(-2.0)  # an in-place update (optimizer step, load_state_dict)
        torch.testing.assert_close(ff(x), ff.w_2(ff.activation(ff.w_1(x))))
    ff.load_state_dict(FeedForward(16, 64).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ff(x), ff.w_2(ff.activation(ff.w_1(x))))
    assert "_weight_transposed" not in "".join(ff.state_dict())
    ff.train()  # training mode keeps dropout
    with torch.no_grad():
        assert not torch.equal(ff(x), ff(x))


class LowRankAdapted(torch.nn.Linear):
    """A Linear plus a trainable low-rank term, as LoRA wrappers (loralib.Linear) are."""

    def __init__(self, linear: torch.nn.Linear, rank: int = 2):
        super().__init__(linear.in_features, linear.out_features)
        self.load_state_dict(linear.state_dict())
        self.lora_a = torch.nn.Parameter(torch.randn(rank, linear.in_features) * 0.3)
        self.lora_b = torch.nn.Parameter(torch.randn(linear.out_features, rank) * 0.3)

    def forward(self, x):
        return super().forward(x) + x @ self.lora_a.t() @ self.lora_b.t()


@pytest.mark.parametrize("training", [True, False])
def test_dense_linear_subclasses_run_their_own_forward(training):
    """The fast paths compute with a Linear's weight and bias; a layer that adds more (here a
    low-rank term, as LoRA does) must be run, in training and in inference."""
    torch.manual_seed(0)
    ff = FeedForward(16, 32)
    ff.w_1, ff.w_2 = LowRankAdapted(ff.w_1), LowRankAdapted(ff.w_2)
    ff.train(training)
    x = torch.randn(2, 9, 16)
    with torch.set_grad_enabled(training):
        out = ff(x)
    with torch.no_grad():
        want = ff.w_2(ff.activation(ff.w_1(x)))
    torch.testing.assert_close(out, want)
    if training:
        out.square().sum().backward()
        low_rank = [ff.w_1.lora_a, ff.w_2.lora_b]
        assert all(p.grad is not None for p in low_rank)
        assert sum(p.grad.abs().sum() for p in low_rank) > 0


@pytest.mark.parametrize("training", [True, False])
def test_dense_forward_hooks_fire(training):
    torch.manual_seed(0)
    ff = FeedForward(16, 32).train(training)
    seen = {}
    ff.w_1.register_forward_hook(lambda module, inputs, output: seen.update(w_1=output))
    x = torch.randn(2, 9, 16)
    with torch.set_grad_enabled(training):
        ff(x)
    torch.testing.assert_close(seen["w_1"], ff.w_1(x))


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16])
def test_dynamic_quantization_takes_the_dense_layers_and_leaves_the_experts(dtype):
    """ESPnet's --quantize_asr_model swaps every nn.Linear for a dynamically quantized one: the
    dense FFN then runs the quantized layers; the experts hold stacked tensors, not Linear
    layers, and run in float32 as before."""
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(16, 4), Experts(4, 16, 64)).eval()
    dense = FeedForward(16, 64).eval()
    x = torch.randn(2, 9, 16)
    with torch.no_grad():
        want, want_dense = layer(x)[0], dense(x)
        quantized = [torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=dtype)
                     for m in (layer, dense)]
        assert type(quantized[1].w_1) is not torch.nn.Linear
        got, got_dense = quantized[0](x)[0], quantized[1](x)
    assert torch.equal(got, want)
    tolerance = 0.05 if dtype == torch.qint8 else 2e-3
    assert not torch.equal(got_dense, want_dense)  # the quantized weights were used
    torch.testing.assert_close(got_dense, want_dense, rtol=tolerance, atol=tolerance)
