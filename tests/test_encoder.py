"""ESPnet encoder contract and router sharing for omni_router, switch and dense_transformer."""

import dataclasses
import gc
import weakref

import pytest
import torch

import espnet_omni  # noqa: F401
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.encoder.transformer_encoder import TransformerEncoder
from espnet_omni.encoder import (
    DenseTransformerEncoder,
    MoETransformerEncoder,
    OmniRouterEncoder,
    SwitchEncoder,
)
from espnet_omni.moe.feed_forward import FeedForward
from espnet_omni.moe.layer import MoEFeedForward

SMALL = dict(output_size=16, attention_heads=2, linear_units=32, num_blocks=3, dropout_rate=0.0)
MOE = dict(num_experts=4)
FEAT = 40
VARIANTS = {
    "omni_router": (OmniRouterEncoder, MOE),
    "switch": (SwitchEncoder, MOE),
    "dense_transformer": (DenseTransformerEncoder, {}),
}
INPUT_LAYERS = ["conv2d", "conv2d2", "conv2d6", "conv2d8", "conv1d2", "linear", "stack"]

def build(name, **overrides):
    cls, moe = VARIANTS[name]
    return cls(FEAT, **{**SMALL, **moe, **overrides})


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("input_layer", INPUT_LAYERS)
def test_encoder_contract(name, input_layer):
    torch.manual_seed(0)
    encoder = build(name, input_layer=input_layer)
    assert isinstance(encoder, AbsEncoder)
    assert encoder.output_size() == 16
    ilens = torch.tensor([64, 50, 33])
    xs = torch.randn(3, 64, FEAT, requires_grad=True)
    out, olens, states = encoder(xs, ilens)
    if input_layer == "stack":
        expected = [-(-int(t) // 4) for t in ilens]  # ceil(T / stack_frames)
    else:  # the same lengths as ESPnet's own encoder with this input layer
        stock = TransformerEncoder(FEAT, output_size=16, linear_units=32, num_blocks=1,
                                   input_layer=input_layer)
        expected = stock(xs.detach(), ilens)[1].tolist()
    assert olens.tolist() == expected
    assert out.shape == (3, max(expected), 16)
    assert states is None
    out.sum().backward()
    assert xs.grad is not None and xs.grad.abs().sum() > 0
    assert all(p.grad is not None for p in encoder.parameters())


@pytest.mark.parametrize("name", VARIANTS)
def test_padding_does_not_change_real_frames(name):
    """An utterance encodes the same alone and in a padded batch (eval, dropless)."""
    torch.manual_seed(0)
    encoder = build(name, input_layer="stack").eval()
    long, short = torch.randn(1, 48, FEAT), torch.randn(1, 21, FEAT)
    batch = torch.cat([long, torch.nn.functional.pad(short, (0, 0, 0, 27), value=7.0)])
    out, olens, _ = encoder(batch, torch.tensor([48, 21]))
    alone, alone_lens, _ = encoder(short, torch.tensor([21]))
    assert olens[1] == alone_lens[0] == 6
    torch.testing.assert_close(out[1, :6], alone[0], rtol=1e-5, atol=1e-5)


def router_parameter_names(encoder):
    return [n for n, _ in encoder.named_parameters() if ".router." in n]


def test_omni_router_has_exactly_one_router():
    encoder = build("omni_router")
    names = router_parameter_names(encoder)
    assert len(names) == 1, names
    assert len(encoder.routers) == 1
    ffns = [layer.feed_forward for layer in encoder.encoders]
    assert all(f.router is ffns[0].router for f in ffns)


def test_switch_has_one_router_per_moe_block():
    encoder = build("switch")
    assert len(router_parameter_names(encoder)) == SMALL["num_blocks"]
    assert len({id(r) for r in encoder.routers}) == SMALL["num_blocks"]


def test_dense_twin_differs_only_in_ffn():
    dense, omni = build("dense_transformer"), build("omni_router")
    assert not router_parameter_names(dense)
    for d_layer, o_layer in zip(dense.encoders, omni.encoders):
        assert isinstance(d_layer.feed_forward, FeedForward)
        assert isinstance(o_layer.feed_forward, MoEFeedForward)
        d_names = {n for n, _ in d_layer.named_parameters() if not n.startswith("feed_forward")}
        o_names = {n for n, _ in o_layer.named_parameters() if not n.startswith("feed_forward")}
        assert d_names == o_names
        # Each expert has the dense FFN's shape: its slice of each stacked tensor, transposed
        # where the dense Linear stores (out, in).
        one_expert = [p[0] for p in o_layer.feed_forward.experts.weights]
        dense = d_layer.feed_forward
        assert [p.shape for p in one_expert] == [
            dense.w_1.weight.t().shape, dense.w_1.bias.shape,
            dense.w_2.weight.t().shape, dense.w_2.bias.shape,
        ]


def test_shared_router_gets_gradient_from_every_moe_block():
    torch.manual_seed(0)
    encoder = build("omni_router", input_layer="linear")
    router = encoder.routers[0]
    xs, ilens = torch.randn(2, 10, FEAT), torch.tensor([10, 7])
    for block in range(SMALL["num_blocks"]):
        encoder.zero_grad()
        with encoder.collect_routing() as trace:
            encoder(xs, ilens)
        # The gate of one block's choices depends on the router only through that block.
        trace.outputs[block].gate.sum().backward()
        assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0, block


def test_experts_are_distinct_parameters():
    encoder = build("switch")
    seen = set()
    for layer in encoder.encoders:
        ptrs = {p.data_ptr() for p in layer.feed_forward.experts.parameters()}
        assert not ptrs & seen
        seen |= ptrs
    w = encoder.encoders[0].feed_forward.experts.w_1
    assert not torch.equal(w[0], w[1])


def test_every_other_and_explicit_moe_layers():
    every_other = build("omni_router", moe_layers="every_other", num_blocks=4)
    explicit = build("switch", moe_layers=[1, 4], num_blocks=4)

    def kinds(enc):
        return [isinstance(block.feed_forward, MoEFeedForward) for block in enc.encoders]

    assert kinds(every_other) == [False, True, False, True]
    assert kinds(explicit) == [True, False, False, True]
    assert every_other.moe_blocks == [2, 4] and explicit.moe_blocks == [1, 4]


def test_interctc_outputs():
    encoder = build("omni_router", interctc_layer_idx=[1, 2], input_layer="linear")
    (out, inter), olens, _ = encoder(torch.randn(2, 9, FEAT), torch.tensor([9, 5]))
    assert [i for i, _ in inter] == [1, 2]
    assert all(h.shape == out.shape for _, h in inter)


def test_top2_and_post_ln_and_positional_choices():
    for overrides in (
        dict(top_k=2),
        dict(normalize_before=False),
        dict(pos_enc_layer_type="scaled_abs_pos"),
        dict(activation_type="gelu", expert_units=48),
    ):
        encoder = build("switch", input_layer="stack", **overrides)
        out, _, _ = encoder(torch.randn(2, 20, FEAT), torch.tensor([20, 11]))
        out.sum().backward()
        assert torch.isfinite(out).all(), overrides


def test_base_class_is_the_single_implementation():
    for cls, _ in VARIANTS.values():
        assert issubclass(cls, MoETransformerEncoder)
        assert cls.forward is MoETransformerEncoder.forward


@pytest.mark.parametrize("name", ["omni_router", "switch"])
def test_experts_implementation_option_reaches_every_moe_block(name):
    """``experts_implementation: grouped_mm`` (the GPU default, run here on CPU under bf16
    autocast as on a GPU) trains like the eager implementation.

    One block: deeper blocks would see the first block's bf16 rounding, which flips routing
    decisions of near-tied tokens of an untrained router.
    """
    torch.manual_seed(0)
    eager = build(name, experts_implementation="eager", num_blocks=1, positional_dropout_rate=0.0)
    grouped = build(name, experts_implementation="grouped_mm", num_blocks=1,
                    positional_dropout_rate=0.0)
    grouped.load_state_dict(eager.state_dict())
    assert all(
        layer.feed_forward.experts.implementation == "grouped_mm" for layer in grouped.encoders
    )
    xs, ilens = torch.randn(2, 40, FEAT), torch.tensor([40, 28])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_eager = eager(xs, ilens)[0]
        out_grouped = grouped(xs, ilens)[0]
    torch.testing.assert_close(out_grouped, out_eager, rtol=5e-2, atol=5e-2)
    out_grouped.float().sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in grouped.parameters())


def test_grouped_gemm_is_read_as_experts_implementation():
    """Configs written with the earlier option name still build."""
    assert build("switch", grouped_gemm=True).encoders[0].feed_forward.experts.implementation == (
        "grouped_mm"
    )
    assert build("omni_router", grouped_gemm=False).encoders[0].feed_forward.experts.implementation == (
        "eager"
    )
    with pytest.raises(ValueError, match="only experts_implementation"):
        build("switch", grouped_gemm=True, experts_implementation="eager")


def tensors_held_by_modules(root: torch.nn.Module):
    """{path: tensor} of every tensor an attribute of a module of ``root`` refers to, its
    parameters and buffers aside (lists, tuples, dicts and dataclasses searched too)."""
    found = {}

    def visit(path, value, depth):
        if isinstance(value, torch.Tensor):
            found[path] = value
        elif depth < 4 and isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(f"{path}[{i}]", item, depth + 1)
        elif depth < 4 and isinstance(value, dict):
            for key, item in value.items():
                visit(f"{path}[{key!r}]", item, depth + 1)
        elif depth < 4 and dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                visit(f"{path}.{f.name}", getattr(value, f.name), depth + 1)

    for name, module in root.named_modules():
        for key, value in vars(module).items():
            if key not in ("_parameters", "_buffers", "_modules"):
                visit(f"{name}.{key}", value, 0)
    return found


def assert_keeps_nothing_of_a_batch(root, run, make_batch):
    """After ``run(batch)`` no module attribute holds a tensor of that batch: what the modules
    hold after a second batch (same shapes, other values) is what they held after the first,
    and the batch itself is freed once the caller drops it."""
    run(make_batch(1))
    held = {path: t.detach().clone() for path, t in tensors_held_by_modules(root).items()}
    batch = make_batch(2)
    freed = weakref.ref(batch[0])
    run(batch)
    after = tensors_held_by_modules(root)
    assert sorted(after) == sorted(held)
    for path, tensor in after.items():
        assert torch.equal(tensor, held[path]), f"{path} holds batch data"
    del batch
    gc.collect()
    assert freed() is None, "the input of the forward is still referenced"


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("mode", ["eval_no_grad", "eval", "train"])
def test_forward_keeps_nothing_of_the_batch(name, mode):
    """Neither routing nor attention weights stay on the encoder after its forward."""
    torch.manual_seed(0)
    encoder = build(name, input_layer="stack", normalize_before=False)
    encoder.train(mode == "train")

    def make_batch(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(3, 37, FEAT, generator=g), torch.tensor([37, 30, 11])

    def run(batch):
        with torch.set_grad_enabled(mode != "eval_no_grad"):
            out, olens, _ = encoder(*batch)
        if mode == "train":
            out.sum().backward()

    assert_keeps_nothing_of_a_batch(encoder, run, make_batch)
    assert encoder._routing_trace is None
    assert all(layer.self_attn.attn is None for layer in encoder.encoders)


def test_collect_routing_hands_over_every_moe_block_and_then_lets_go():
    encoder = build("switch", moe_layers=[1, 3], input_layer="linear")
    xs, ilens = torch.randn(2, 10, FEAT), torch.tensor([10, 7])
    with encoder.collect_routing() as trace:
        encoder(xs, ilens)
        with pytest.raises(RuntimeError, match="already active"):
            with encoder.collect_routing():
                pass
    assert trace.blocks == [1, 3] and len(trace.outputs) == 2
    assert trace.outputs[0].token_mask.tolist() == [True] * 10 + [True] * 7 + [False] * 3
    assert encoder._routing_trace is None
    encoder(xs, ilens)  # outside the block: collected nowhere
    assert len(trace.outputs) == 2


def test_stochastic_depth_of_moe_encoder_layer():
    """ESPnet's EncoderLayer stochastic depth: a skipped layer is the identity and returns no
    routing; a kept one scales its residual branches by 1 / (1 - p)."""
    torch.manual_seed(0)
    encoder = build("omni_router", input_layer="linear", num_blocks=1)
    layer = encoder.encoders[0]
    x, mask = torch.randn(2, 5, 16), torch.ones(2, 1, 5, dtype=torch.bool)
    layer.stochastic_depth_rate = 1 - 1e-9
    out, _, routing = layer(x, mask)
    assert out is x and routing is None
    layer.stochastic_depth_rate = 0.5
    outs = {layer(x, mask)[2] is None for _ in range(30)}
    assert outs == {True, False}
    layer.eval()
    assert layer(x, mask)[2] is not None
