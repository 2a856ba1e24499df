"""The experts and a training step on a CUDA GPU (run by benchmarks/gpu_report.sh there; CPU
machines have no device for them)."""

import contextlib
import copy

import pytest
import torch

from espnet_omni.moe.experts import Experts
from espnet_omni.moe.layer import MoEFeedForward
from espnet_omni.moe.losses import router_losses
from espnet_omni.moe.router import Router

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")


def hopper_or_newer() -> bool:
    return torch.cuda.get_device_capability()[0] >= 9


def test_default_implementation_is_grouped_mm_under_bf16_autocast():
    experts = Experts(8, 64, 128).to(CUDA)
    x = torch.randn(10, 64, device=CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        chosen = experts.implementation_for(x)
    assert chosen == ("grouped_mm" if hopper_or_newer() else "eager", torch.bfloat16)
    assert experts.implementation_for(x) == ("eager", torch.float32)  # no bf16 kernel in fp32


@pytest.mark.parametrize("top_k,capacity", [(1, None), (1, 0.8), (2, None)])
def test_grouped_mm_matches_eager_with_padding(top_k, capacity):
    """The GPU default against the eager implementation, both under bf16 autocast: outputs and
    every gradient; padded and dropped frames exactly 0, in the output and in the input
    gradient."""
    torch.manual_seed(0)
    grouped = MoEFeedForward(
        Router(64, 8, top_k=top_k),
        Experts(8, 64, 128, implementation="grouped_mm"),
        capacity_factor=capacity,
    ).to(CUDA)
    eager = copy.deepcopy(grouped)
    eager.experts.implementation = "eager"
    x = torch.randn(4, 50, 64, device=CUDA)
    mask = torch.arange(50, device=CUDA)[None, :] < torch.tensor([50, 41, 17, 3], device=CUDA)[:, None]
    grad = torch.randn(4, 50, 64, device=CUDA)
    results = []
    for layer in (grouped, eager):
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y, _ = layer(xi, mask)
        y.float().backward(grad)
        results.append((y.float(), xi.grad, {n: p.grad for n, p in layer.named_parameters()}))
    (y, gx, gp), (y_ref, gx_ref, gp_ref) = results
    torch.testing.assert_close(y, y_ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gx, gx_ref, rtol=3e-2, atol=3e-2)
    for name in gp:
        torch.testing.assert_close(gp[name], gp_ref[name], rtol=5e-2, atol=5e-2, msg=name)
    assert torch.equal(y[~mask], torch.zeros_like(y[~mask]))
    assert torch.equal(gx[~mask], torch.zeros_like(gx[~mask]))
    if capacity is not None:
        dropped = (y_ref == 0).all(-1) & mask
        assert dropped.any() and torch.equal(dropped, (y == 0).all(-1) & mask)


def test_grouped_mm_dropout_drops_and_rescales():
    torch.manual_seed(0)
    experts = Experts(1, 64, 64, dropout_rate=0.25, implementation="grouped_mm").to(CUDA).train()
    with torch.no_grad():
        experts.w_1.copy_(torch.eye(64))
        experts.w_2.copy_(torch.eye(64))
        experts.b_1.zero_()
        experts.b_2.zero_()
    x = (torch.rand(4000, 64, device=CUDA) + 0.5).requires_grad_()
    index = torch.zeros(4000, 1, dtype=torch.long, device=CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = experts(x, index, torch.ones(4000, 1, device=CUDA)).float()
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.01
    torch.testing.assert_close(y[kept], x.detach()[kept] / 0.75, rtol=1e-2, atol=1e-2)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / 0.75, rtol=1e-2, atol=1e-2)


def test_omni_router_training_step_makes_no_host_synchronisation():
    """Forward with router losses and routing statistics, backward and a fused AdamW step of the
    Omni-router encoder under bf16 autocast, with torch's sync debug mode raising on any host
    synchronisation. ESPnet's CTC (which reads the lengths on the host) runs outside the checked
    region: its gradient with respect to the encoder output is computed there first."""
    if not hopper_or_newer():
        pytest.skip("grouped_mm synchronises on GPUs before compute capability 9.0")
    from espnet2.asr.ctc import CTC

    from espnet_omni.analysis.routing_stats import routing_health
    from espnet_omni.encoder import OmniRouterEncoder

    torch.manual_seed(0)
    encoder = OmniRouterEncoder(80, output_size=256, attention_heads=4, linear_units=1024,
                                num_blocks=3, num_experts=8, input_layer="stack").to(CUDA)
    ctc = CTC(50, 256).to(CUDA)
    modules = torch.nn.ModuleList([encoder, ctc]).train()
    optimizer = torch.optim.AdamW(modules.parameters(), lr=1e-3, fused=True)
    feats = torch.randn(3, 200, 80, device=CUDA)
    lengths = torch.tensor([200, 150, 90], device=CUDA)
    target = torch.randint(1, 50, (3, 10), device=CUDA)
    target_lengths = torch.full((3,), 10, device=CUDA)

    def forward():
        with torch.autocast("cuda", dtype=torch.bfloat16), encoder.collect_routing() as trace:
            out, out_lengths, _ = encoder(feats, lengths)
            aux = sum(router_losses(trace.outputs))
            stats = routing_health(trace.outputs, trace.blocks)
        return out, out_lengths, aux, stats

    def step(checked):
        with checked():
            out, out_lengths, aux, stats = forward()
        grad_out = torch.autograd.grad(ctc(out.float(), out_lengths, target, target_lengths),
                                       out, retain_graph=True)[0]
        with checked():
            torch.autograd.backward([out, aux], [grad_out, torch.ones_like(aux)])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return stats

    class sync_errors:
        def __enter__(self):
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")

        def __exit__(self, *exc):
            torch.cuda.set_sync_debug_mode("default")

    before = encoder.routers[0].weight.detach().clone()
    step(contextlib.nullcontext)  # warm-up: lazy initialisations are not checked
    stats = step(sync_errors)
    assert not torch.equal(before, encoder.routers[0].weight)
    assert {value.device.type for value in stats.values()} == {"cuda"}
    # The check itself: a host read inside it raises.
    with pytest.raises(RuntimeError):
        with sync_errors():
            lengths.max().item()
