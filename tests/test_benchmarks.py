"""The benchmark's reference implementations, measured parts and memory probe (not its timings)."""

import statistics

import pytest
import torch

from espnet_omni.benchmark import encoder as encoder_bench
from espnet_omni.benchmark import ffn, peers, report, timing
from espnet_omni.moe.experts import Experts
from espnet_omni.moe.layer import MoEFeedForward
from espnet_omni.moe.router import Router


def test_gshard_einsum_reference_equals_our_layer_at_the_same_capacity():
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(16, 4), Experts(4, 16, 32), eval_capacity_factor=1.0).eval()
    with torch.no_grad():
        layer.router.weight.mul_(50.0)  # confident, unbalanced routing: some tokens dropped
        x = torch.randn(64, 16)
        ours = layer(x[None])[0][0]
        reference = peers.GShardEinsumMoE(layer, capacity_factor=1.0)(x)
    dropped = (ours == 0).all(-1)
    assert dropped.any() and not dropped.all()
    torch.testing.assert_close(reference, ours)


def test_gshard_einsum_reference_trains_the_stacked_weights():
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(16, 4), Experts(4, 16, 32)).train()
    reference = peers.GShardEinsumMoE(layer, capacity_factor=4.0)  # nothing dropped
    reference(torch.randn(64, 16)).sum().backward()
    for weight in layer.experts.weights:
        assert weight.grad is not None and weight.grad.shape == weight.shape
    assert layer.router.weight.grad is not None


def test_expert_ffns_alone_give_each_expert_the_gradients_of_its_own_tokens():
    """The benchmark's training floor: each expert's fwd+bwd on the tokens the router sends it,
    the same gradients as that expert's FFN computed by hand on those tokens."""
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(16, 4), Experts(4, 16, 32)).train()
    x, grad = torch.randn(96, 16), torch.randn(96, 16)
    ffn.expert_ffns_only(layer, x, grad)()
    choice = layer.router(x).expert_index.view(-1)
    assert choice.unique().numel() == 4
    got = [weight.grad for weight in layer.experts.weights]
    for expert in range(4):
        mine = choice == expert
        w_1, b_1, w_2, b_2 = (
            weight[expert].detach().clone().requires_grad_() for weight in layer.experts.weights
        )
        (torch.relu(x[mine] @ w_1 + b_1) @ w_2 + b_2).backward(grad[mine])
        for value, by_hand in zip(got, (w_1, b_1, w_2, b_2)):
            torch.testing.assert_close(value[expert], by_hand.grad)


def test_expert_gemms_alone_are_each_experts_two_products_on_its_rows():
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(16, 4), Experts(4, 16, 32)).eval()
    x = torch.randn(80, 16)
    out = ffn.expert_gemms_only(layer, x)()
    order, counts = ffn.sorted_by_expert(layer, x)
    assert counts.sum() == 80 and (counts > 0).all()
    rows, start = x[order], 0
    for expert, count in enumerate(counts.tolist()):
        span = slice(start, start + count)
        expected = rows[span] @ layer.experts.w_1[expert] @ layer.experts.w_2[expert]
        torch.testing.assert_close(out[span], expected.detach())
        start += count


def test_the_weights_read_covers_every_experts_weights_and_biases():
    """The T=250 streaming probe reads everything the experts' inference multiplies by or adds:
    all E experts' stacked weights and biases, none left out."""
    torch.manual_seed(0)
    layer = MoEFeedForward(Router(16, 4), Experts(4, 16, 32)).eval()
    w_1, b_1, w_2, b_2 = layer.experts.weights
    total = sum(weight.detach().double().sum() for weight in (w_1, b_1, w_2, b_2))
    with torch.no_grad():
        read = ffn.expert_weights_read(layer)()
    torch.testing.assert_close(read.double(), total, rtol=1e-5, atol=1e-5)


def test_hf_switch_mlp_runs_our_weights():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    layer = peers.moe_layer(16, 32, 4, torch.device("cpu"), zero_bias=True).eval()
    mlp = peers.hf_switch_mlp(layer, 64).eval()
    x = torch.randn(64, 16)
    with torch.no_grad():
        out = mlp(x[None])
        out = out[0] if isinstance(out, tuple) else out
        torch.testing.assert_close(out.reshape(64, 16), layer(x[None])[0][0])
    with torch.no_grad():
        layer.experts.b_2[0] = 1.0
    with pytest.raises(ValueError, match="biases"):
        peers.hf_switch_mlp(layer, 64)


def test_moe_layer_zero_bias_zeroes_the_stacked_biases_only():
    layer = peers.moe_layer(16, 32, 4, torch.device("cpu"), zero_bias=True)
    assert not layer.experts.b_1.any() and not layer.experts.b_2.any()
    assert layer.experts.w_1.any() and layer.experts.w_2.any()


def test_activation_memory_does_not_grow_with_the_number_of_experts():
    torch.manual_seed(0)
    x = torch.randn(1, 512, 32, requires_grad=True)
    saved = {}
    for num_experts in (1, 16):
        layer = MoEFeedForward(Router(32, num_experts), Experts(num_experts, 32, 128))
        saved[num_experts] = timing.saved_activation_bytes(layer, lambda: layer(x)[0])
    # The hidden activations of all tokens (512 x 128 floats) are saved either way; only the
    # router's (tokens, E) probabilities grow with E.
    assert saved[1] > 512 * 128 * 4
    assert saved[16] - saved[1] <= 512 * 16 * 4
    einsum = peers.GShardEinsumMoE(MoEFeedForward(Router(32, 16), Experts(16, 32, 128)), 1.25)
    assert timing.saved_activation_bytes(einsum, lambda: einsum(x[0])) > 2 * saved[16]


def test_the_encoders_compared_see_the_same_frames_through_the_same_stacking():
    size = dict(idim=8, stack=4, d=16, heads=2, f=32, blocks=1)
    feats, lengths = torch.randn(2, 40, 8), torch.tensor([40, 30])
    stacked, stacked_lengths = encoder_bench.stacked_input(feats, lengths, 4)
    assert stacked.shape == (2, 10, 32) and stacked_lengths.tolist() == [10, 8]
    torch.testing.assert_close(stacked[1, 2], feats[1, 8:12].reshape(-1))
    shapes = {}
    for kind in ("dense_transformer", "omni_router", "espnet_transformer"):
        encoder = encoder_bench.build_encoder(kind, 4, size, torch.device("cpu")).eval()
        inputs = (stacked, stacked_lengths) if kind == "espnet_transformer" else (feats, lengths)
        out, out_lengths, _ = encoder(*inputs)
        shapes[kind] = (tuple(out.shape), tuple(out_lengths.tolist()))
    assert set(shapes.values()) == {((2, 10, 16), (10, 8))}


def test_targets_divide_medians_and_round_ratios_cancel_a_common_drift():
    # Both candidates slow down together from round to round (a shared machine warming up):
    # every round's ratio but one is exactly 1.2; the one slow MoE round (10 s) moves its median.
    dense = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    ours = [1.2 * t for t in dense]
    ours[0] = 10.0
    results = {"encoder": {"step_rounds_s": {"omni_router": ours, "dense_transformer": dense}},
               "memory": {"saved_bytes": {"E=1": 100, "E=32": 103}}}
    figures = report.figures(results)
    assert figures["encoder_step"] == ((4.8 + 6.0) / 2) / 3.5
    assert figures["activation_growth"] == 1.03
    quartiles = report.round_quartiles(results)
    assert set(quartiles) == {"encoder_step"}  # one memory value: no rounds
    low, high = quartiles["encoder_step"]
    assert abs(low - 1.2) < 1e-12 and 1.2 < high < 10.0


def test_interleaved_times_run_every_candidate_in_turn_each_round():
    calls = []
    times = timing.interleaved_times({"a": lambda: calls.append("a"),
                                      "b": lambda: calls.append("b")},
                                     torch.device("cpu"), repeats=3, calls=2, warmup=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert {name: len(rounds) for name, rounds in times.items()} == {"a": 3, "b": 3}
    assert timing.medians({"a": [3.0, 1.0, 2.0]}) == {"a": 2.0}


def test_small_inference_pools_the_rounds_of_each_fresh_process():
    pooled = ffn.small_inference_in_processes(torch.device("cpu"), [1], repeats=2, processes=2)
    assert set(pooled) == {"1/8", "1/32"}
    for run in pooled.values():
        rounds = run["infer_T250_rounds_s"]
        assert {"dense", "ours", "ours_expert_gemms", "ours_weights_read"} <= set(rounds)
        # 3 x repeats rounds in all, 3 per process at least.
        assert all(len(times) == 6 and min(times) > 0 for times in rounds.values())
        assert len(run["infer_T250_process_ratios"]) == 2 == len(run["infer_T250_calls"])
        assert run["infer_T250_s"]["ours"] == statistics.median(rounds["ours"])
