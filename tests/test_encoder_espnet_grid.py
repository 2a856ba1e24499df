"""ESPnet's own TransformerEncoder tests, run against omni_router, switch and dense_transformer.

Follows ESPnet's test/espnet2/asr/encoder/test_transformer_encoder.py (the version that goes
with ESPnet 202511, where ``input_layer: null`` projects 20-dim features with one Linear
layer): the same parametrisation of ``test_Encoder_forward_backward`` (input_layer x
positionwise_layer_type x intermediate CTC), with ESPnet's default ``linear`` added to the
positionwise axis, and its three construction tests. ESPnet's invalid ``interctc_layer_idx``
raises AssertionError; these encoders raise a ValueError that says what is wrong.

The rest covers the other TransformerEncoder options: accepted where they mean something for
these encoders (same results as ESPnet's encoder on ESPnet's weights), refused with the reason
where they do not.
"""

import inspect

import pytest
import torch

import espnet_omni  # noqa: F401
from espnet2.asr.ctc import CTC
from espnet2.asr.encoder.transformer_encoder import TransformerEncoder
from espnet_omni.encoder import (
    REFUSED_OPTIONS,
    DenseTransformerEncoder,
    OmniRouterEncoder,
    SwitchEncoder,
)
from espnet_omni.moe.layer import MoEFeedForward

VARIANTS = {
    "omni_router": (OmniRouterEncoder, dict(num_experts=4)),
    "switch": (SwitchEncoder, dict(num_experts=4)),
    "dense_transformer": (DenseTransformerEncoder, {}),
}
MOE_VARIANTS = ["omni_router", "switch"]


def build(name, *args, **kwargs):
    cls, moe = VARIANTS[name]
    return cls(*args, **{**moe, **kwargs})


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("input_layer", ["linear", "conv2d", "embed", None])
@pytest.mark.parametrize("positionwise_layer_type", ["linear", "conv1d", "conv1d-linear"])
@pytest.mark.parametrize(
    "interctc_layer_idx, interctc_use_conditioning",
    [
        ([], False),
        ([1], False),
        ([1], True),
    ],
)
def test_Encoder_forward_backward(
    name,
    input_layer,
    positionwise_layer_type,
    interctc_layer_idx,
    interctc_use_conditioning,
):
    encoder = build(
        name,
        20,
        output_size=40,
        input_layer=input_layer,
        positionwise_layer_type=positionwise_layer_type,
        interctc_layer_idx=interctc_layer_idx,
        interctc_use_conditioning=interctc_use_conditioning,
    )
    if input_layer == "embed":
        x = torch.randint(0, 10, [2, 10])
    else:
        x = torch.randn(2, 10, 20, requires_grad=True)
    x_lens = torch.LongTensor([10, 8])
    if len(interctc_layer_idx) > 0:
        ctc = None
        if interctc_use_conditioning:
            vocab_size = 5
            output_size = encoder.output_size()
            ctc = CTC(odim=vocab_size, encoder_output_size=output_size)
            encoder.conditioning_layer = torch.nn.Linear(vocab_size, output_size)
        y, olens, _ = encoder(x, x_lens, ctc=ctc)
        y, intermediate = y
        assert [block for block, _ in intermediate] == interctc_layer_idx
    else:
        y, olens, _ = encoder(x, x_lens)
    y.sum().backward()
    frames = 10 if input_layer != "conv2d" else 1  # conv2d: (10 - 1) // 2 = 4, then 1
    assert y.shape == (2, frames, 40) and olens[0] == frames
    assert torch.isfinite(y).all()
    if input_layer != "embed":
        assert x.grad is not None and torch.isfinite(x.grad).all()
    moe = [isinstance(layer.feed_forward, MoEFeedForward) for layer in encoder.encoders]
    assert all(moe) == (name in MOE_VARIANTS) and any(moe) == (name in MOE_VARIANTS)


@pytest.mark.parametrize("name", VARIANTS)
def test_encoder_invalid_interctc_layer_idx(name):
    with pytest.raises(ValueError, match="interctc_layer_idx must lie in 1..num_blocks-1"):
        build(name, 20, num_blocks=2, interctc_layer_idx=[0, 1])
    with pytest.raises(ValueError, match="interctc_layer_idx must lie in 1..num_blocks-1"):
        build(name, 20, num_blocks=2, interctc_layer_idx=[1, 2])


@pytest.mark.parametrize("name", VARIANTS)
def test_Encoder_output_size(name):
    encoder = build(name, 20, output_size=256)
    assert encoder.output_size() == 256


@pytest.mark.parametrize("name", VARIANTS)
def test_Encoder_invalid_type(name):
    with pytest.raises(ValueError, match="input_layer must be one of"):
        build(name, 20, input_layer="fff")


# --- every TransformerEncoder option: accepted, or refused with the reason ------------------

@pytest.mark.parametrize("name", VARIANTS)
def test_every_transformer_encoder_option_is_accepted_or_refused_with_a_reason(name):
    """The installed ESPnet's TransformerEncoder options (202511: up to use_flash_attn;
    202611 adds use_sdpa) are the variant's options or refused; a refused one says why."""
    cls, _ = VARIANTS[name]
    ours = inspect.signature(cls).parameters
    for option in inspect.signature(TransformerEncoder.__init__).parameters:
        if option == "self":
            continue
        assert option in ours or option in REFUSED_OPTIONS, option
    assert "use_sdpa" in ours
    assert set(REFUSED_OPTIONS) == {"pos_enc_class"}
    with pytest.raises(ValueError, match="pos_enc_class' is not supported: .*pos_enc_layer_type"):
        build(name, 20, pos_enc_class=torch.nn.Identity)


def espnet_twin(**options):
    """ESPnet's TransformerEncoder and dense_transformer with the same options and weights."""
    torch.manual_seed(0)
    common = dict(output_size=16, attention_heads=2, linear_units=24, num_blocks=2, **options)
    input_size = 16 if options.get("input_layer") == "wav2vec" else 20
    stock = TransformerEncoder(input_size, **common).eval()
    ours = DenseTransformerEncoder(input_size, **common).eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    return stock, ours


@pytest.mark.parametrize(
    "options",
    [
        dict(input_layer=None),  # 20 -> 16: one Linear layer, no positional encoding
        dict(input_layer="embed", padding_idx=0),
        dict(input_layer="wav2vec"),
        dict(input_layer="linear", positionwise_layer_type="conv1d",
             positionwise_conv_kernel_size=3),
        dict(input_layer="conv2d", positionwise_layer_type="conv1d-linear",
             positionwise_conv_kernel_size=5, normalize_before=False, concat_after=True),
        dict(input_layer="linear", pos_enc_layer_type="conv", qk_norm=True,
             layer_drop_rate=0.5),
    ],
    ids=["null", "embed", "wav2vec", "conv1d-k3", "conv1d-linear-k5-postln", "convpos-qknorm"],
)
def test_dense_twin_loads_espnet_weights_and_computes_the_same(options):
    """ESPnet's checkpoint loads with strict=True and, on unpadded input in eval mode, gives
    ESPnet's output (padded frames differ for conv FFNs: these never let them in)."""
    stock, ours = espnet_twin(**options)
    if options["input_layer"] == "embed":
        x = torch.randint(1, 20, (2, 30))
    else:
        x = torch.randn(2, 30, 20 if options["input_layer"] != "wav2vec" else 16)
    lens = torch.tensor([30, 30])
    with torch.no_grad():
        expected, expected_lens, _ = stock(x, lens)
        got, got_lens, _ = ours(x, lens)
    assert got_lens.tolist() == expected_lens.tolist()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_null_input_layer_keeps_features_of_output_width():
    """As ESPnet: input_size == output_size means no input layer at all."""
    encoder = build("omni_router", 16, output_size=16, attention_heads=2, input_layer=None)
    assert encoder.embed is None
    projected = build("omni_router", 20, output_size=16, attention_heads=2, input_layer=None)
    assert isinstance(projected.embed, torch.nn.Linear)


@pytest.mark.parametrize("positionwise_layer_type", ["conv1d", "conv1d-linear"])
def test_wide_conv_ffn_is_dense_only(positionwise_layer_type):
    """A kernel over several frames cannot be an expert: each frame goes to its own expert."""
    for name in MOE_VARIANTS:
        with pytest.raises(ValueError, match="cannot apply to MoE blocks: the router sends"):
            build(name, 20, positionwise_layer_type=positionwise_layer_type,
                  positionwise_conv_kernel_size=3)
        with pytest.raises(ValueError, match="cannot apply to MoE blocks"):
            build(name, 20, positionwise_layer_type=positionwise_layer_type,
                  positionwise_conv_kernel_size=3, moe_layers="every_other")
    encoder = build("dense_transformer", 20, output_size=16, attention_heads=2,
                    positionwise_layer_type=positionwise_layer_type,
                    positionwise_conv_kernel_size=3, input_layer="linear",
                    dropout_rate=0.0).eval()
    # Padded frames never reach a real frame through the kernel.
    long, short = torch.randn(1, 12, 20), torch.randn(1, 7, 20)
    batch = torch.cat([long, torch.nn.functional.pad(short, (0, 0, 0, 5), value=9.0)])
    with torch.no_grad():
        out, _, _ = encoder(batch, torch.tensor([12, 7]))
        alone, _, _ = encoder(short, torch.tensor([7]))
    torch.testing.assert_close(out[1, :7], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(positionwise_layer_type="conv2d"), "positionwise_layer_type must be one of"),
        (dict(positionwise_conv_kernel_size=3), "a linear FFN has none"),
        (dict(positionwise_layer_type="conv1d", positionwise_conv_kernel_size=4),
         "must be odd"),
        (dict(positionwise_layer_type="conv1d", activation_type="gelu"), "applies ReLU"),
        (dict(padding_idx=0), "padding index of input_layer: embed"),
        (dict(input_layer="wav2vec"), "input_size must equal output_size"),
        (dict(layer_drop_rate=1.0), r"layer_drop_rate must be in \[0, 1\)"),
    ],
)
@pytest.mark.parametrize("name", VARIANTS)
def test_options_without_a_meaning_are_refused_with_the_reason(name, options, message):
    with pytest.raises(ValueError, match=message):
        build(name, 20, **options)


def test_sdpa_and_flash_options_give_the_same_encoder():
    """use_sdpa (ESPnet 202611's new TransformerEncoder option) reaches the attention."""
    torch.manual_seed(0)
    plain = build("omni_router", 20, output_size=16, attention_heads=2, input_layer="linear")
    sdpa = build("omni_router", 20, output_size=16, attention_heads=2, input_layer="linear",
                 use_sdpa=True, use_flash_attn=False)
    sdpa.load_state_dict(plain.state_dict())
    assert all(layer.self_attn.use_sdpa for layer in sdpa.encoders)
    x, lens = torch.randn(2, 9, 20), torch.tensor([9, 6])
    with torch.no_grad():
        a, _, _ = plain.eval()(x, lens)
        b, _, _ = sdpa.eval()(x, lens)
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[1, :6], b[1, :6], rtol=1e-5, atol=1e-5)


def test_masks_argument_replaces_the_lengths():
    """ESPnet's forward(xs_pad, ilens, prev_states, masks, ctc, return_all_hs)."""
    encoder = build("switch", 20, output_size=16, attention_heads=2, input_layer="linear").eval()
    x, lens = torch.randn(2, 9, 20), torch.tensor([9, 6])
    pad = torch.arange(9)[None, :] >= lens[:, None]
    with torch.no_grad():
        a, a_lens, _ = encoder(x, lens)
        b, b_lens, _ = encoder(x, lens, None, pad)
    assert a_lens.tolist() == b_lens.tolist() == [9, 6]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", VARIANTS)
def test_layer_drop_skips_blocks_in_training_only(name):
    torch.manual_seed(0)
    encoder = build(name, 20, output_size=16, attention_heads=2, num_blocks=4,
                    input_layer="linear", dropout_rate=0.0, positional_dropout_rate=0.0,
                    layer_drop_rate=0.5)
    x, lens = torch.randn(2, 9, 20), torch.tensor([9, 6])
    seen = set()
    for _ in range(20):
        with encoder.collect_routing() as trace:
            out, _, _ = encoder(x, lens)
        seen.add(tuple(trace.blocks))
        out.sum().backward()
    if name in MOE_VARIANTS:
        assert len(seen) > 4
        assert all(set(blocks) <= {1, 2, 3, 4} for blocks in seen)
    # Eval: every block runs, and the encoder is the one without layer drop.
    encoder.eval()
    twin = build(name, 20, output_size=16, attention_heads=2, num_blocks=4,
                 input_layer="linear").eval()
    twin.load_state_dict(encoder.state_dict())
    with torch.no_grad(), encoder.collect_routing() as trace:
        torch.testing.assert_close(encoder(x, lens)[0], twin(x, lens)[0])
    assert trace.blocks == ([1, 2, 3, 4] if name in MOE_VARIANTS else [])
    # A skipped block is the identity: with every block skipped, the output is the input
    # layer's, normalised.
    encoder.train()
    encoder.layer_drop_rate = 0.999999
    with torch.no_grad():
        out, _, _ = encoder(x, lens)
        torch.testing.assert_close(out, encoder.after_norm(encoder.embed(x)))
