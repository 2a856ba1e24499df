"""The moe_espnet model: auxiliary losses in the loss and in ESPnet's stats."""

import pytest
import torch

import espnet_omni  # noqa: F401
from espnet_omni.configs import build_model_from_config
from espnet_omni.moe.losses import load_balancing_loss, router_z_loss

from conftest import CONF


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    speech = torch.randn(3, 12000, generator=g)
    lengths = torch.tensor([12000, 9000, 4000])
    text = torch.randint(3, 28, (3, 4), generator=g)
    return speech, lengths, text, torch.tensor([4, 3, 2])


def test_loss_adds_weighted_router_losses_and_reports_them():
    torch.manual_seed(0)
    model = build_model_from_config(CONF / "tiny" / "omni_router.yaml", 30, device="cpu").eval()
    model.load_balance_weight, model.router_z_weight = 0.5, 0.25
    with torch.no_grad():
        loss, stats, _ = model(*batch())
        with model.encoder.collect_routing() as trace:  # the same forward, routing kept
            model.encode(batch()[0], batch()[1])
    routing = trace.outputs
    assert trace.blocks == [1, 2]
    lb = torch.stack([load_balancing_loss(r) for r in routing]).mean()
    z = torch.stack([router_z_loss(r) for r in routing]).mean()
    torch.testing.assert_close(stats["loss_lb"].reshape(()), lb)
    torch.testing.assert_close(stats["loss_z"].reshape(()), z)
    # ESPnet sums CTC over each utterance: the router losses are summed over frames alike.
    frames_per_utterance = routing[0].token_mask.sum() / 3
    torch.testing.assert_close(
        loss.reshape(()), stats["loss_ctc"].reshape(()) + frames_per_utterance * (0.5 * lb + 0.25 * z)
    )
    model.scale_router_losses = False
    with torch.no_grad():
        unscaled, unscaled_stats, _ = model(*batch())
    torch.testing.assert_close(
        unscaled.reshape(()), unscaled_stats["loss_ctc"].reshape(()) + 0.5 * lb + 0.25 * z
    )
    torch.testing.assert_close(stats["loss"], loss)
    for block in (1, 2):
        assert 0 < stats[f"route_entropy_b{block}"] <= 1
        assert 0.25 <= stats[f"route_max_load_b{block}"] <= 1
        assert 0 <= stats[f"route_unused_b{block}"] <= 3
        loads = torch.cat([stats[f"route_load_b{block}_e{e}"].reshape(1) for e in range(4)])
        torch.testing.assert_close(loads.sum(), torch.tensor(1.0))
        torch.testing.assert_close(loads.max(), stats[f"route_max_load_b{block}"].reshape(()))
        assert int((loads == 0).sum()) == stats[f"route_unused_b{block}"]
    assert 0 <= stats["route_nmi"] <= 1


def test_sum_reduction_adds_each_blocks_router_losses():
    torch.manual_seed(0)
    model = build_model_from_config(CONF / "tiny" / "switch.yaml", 30, device="cpu").eval()
    model.load_balance_weight, model.router_z_weight = 0.5, 0.25
    model.scale_router_losses = False
    with torch.no_grad():
        mean_loss, mean_stats, _ = model(*batch())
        model.router_loss_reduction = "sum"
        sum_loss, sum_stats, _ = model(*batch())
        with model.encoder.collect_routing() as trace:
            model.encode(batch()[0], batch()[1])
    lb = torch.stack([load_balancing_loss(r) for r in trace.outputs])
    z = torch.stack([router_z_loss(r) for r in trace.outputs])
    assert len(trace.outputs) == 2 and not torch.allclose(lb[0], lb[1])
    torch.testing.assert_close(sum_stats["loss_lb"].reshape(()), lb.sum())
    torch.testing.assert_close(sum_stats["loss_z"].reshape(()), z.sum())
    torch.testing.assert_close(mean_stats["loss_lb"].reshape(()), lb.mean())
    torch.testing.assert_close(
        sum_loss.reshape(()), sum_stats["loss_ctc"].reshape(()) + 0.5 * lb.sum() + 0.25 * z.sum()
    )


def test_router_losses_reach_the_router():
    torch.manual_seed(0)
    model = build_model_from_config(CONF / "tiny" / "switch.yaml", 30, device="cpu")
    model.load_balance_weight = 1.0
    loss, stats, _ = model(*batch())
    loss.sum().backward()
    for router in model.encoder.routers:
        assert router.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("option, pattern", [
    ({"load_balance_weight": -1.0}, "load_balance_weight"),
    ({"router_loss_reduction": "max"}, "router_loss_reduction.*'max'"),
    ({"expert_collapse_window": -1}, "expert_collapse_window.*-1"),
    ({"expert_collapse_max_share": 0.0}, "expert_collapse_max_share.*0.0"),
])
def test_bad_model_options_are_rejected(option, pattern):
    from espnet_omni.model import MoEESPnetASRModel
    from espnet2.asr.ctc import CTC

    with pytest.raises(ValueError, match=pattern):
        MoEESPnetASRModel(
            vocab_size=5, token_list=["<blank>", "a", "b", "c", "<sos/eos>"], frontend=None,
            specaug=None, normalize=None, preencoder=None, encoder=None, postencoder=None,
            decoder=None, ctc=CTC(5, 4), joint_network=None, ctc_weight=1.0, **option,
        )


@pytest.mark.parametrize("config", ["omni_router", "switch", "dense_transformer"])
def test_inference_keeps_nothing_of_the_batch(config):
    """After ``encode`` (what Speech2Text runs) and an eval-mode forward (validation), no
    module of the model holds a tensor of the batch."""
    from test_encoder import assert_keeps_nothing_of_a_batch

    torch.manual_seed(0)
    model = build_model_from_config(CONF / "tiny" / f"{config}.yaml", 30, device="cpu").eval()

    def encode(b):
        with torch.no_grad():
            model.encode(b[0], b[1])

    def forward(b):
        with torch.no_grad():
            model(*b)

    assert_keeps_nothing_of_a_batch(model, encode, batch)
    assert_keeps_nothing_of_a_batch(model, forward, batch)


def test_layer_drop_keeps_the_stats_keys_and_skips_skipped_blocks():
    """Every step reports the same keys (distributed training reduces them together); a MoE
    block skipped by layer drop reports NaN, and with every block skipped the loss is ESPnet's."""
    torch.manual_seed(0)
    model = build_model_from_config(CONF / "tiny" / "switch.yaml", 30, device="cpu")
    _, full, _ = model(*batch())
    model.encoder.layer_drop_rate = 0.5
    seen = set()
    for _ in range(12):
        loss, stats, _ = model(*batch())
        assert sorted(stats) == sorted(full)
        ran = tuple(b for b in (1, 2) if torch.isfinite(stats[f"route_entropy_b{b}"]))
        seen.add(ran)
        assert torch.isfinite(loss)
        assert torch.isfinite(stats["loss_lb"]) == bool(ran)
        if not ran:
            torch.testing.assert_close(loss.reshape(()), stats["loss_ctc"].reshape(()))
    assert () in seen and len(seen) >= 3

