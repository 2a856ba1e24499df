"""Training numerics of the moe_espnet model: bf16 autocast on adversarial batches, non-finite
losses counted, expert collapse written to the log as it happens."""

import logging

import pytest
import torch

import espnet_omni  # noqa: F401
from espnet_omni.analysis.expert_collapse import ExpertCollapseMonitor
from espnet_omni.configs import build_model_from_config
from espnet_omni.moe.router import RouterOutput

from conftest import CONF

FS = 16000


def adversarial_batches():
    """(name, speech (B, T), lengths (B,), text (B, L), text lengths (B,)) of inputs that break
    careless numerics: digital silence, full-scale clipping, a 30 s utterance, and a 50 ms one
    shorter than its transcript (a CTC loss with no alignment)."""
    g = torch.Generator().manual_seed(0)
    text = torch.randint(3, 28, (2, 6), generator=g)
    t = torch.arange(FS * 2) / FS
    loud = (torch.randn(2, FS * 2, generator=g) * 20).clamp(-1.0, 1.0)
    square = torch.sign(torch.sin(2 * torch.pi * 440 * t)).expand(2, -1)
    two = torch.tensor([FS * 2, FS])
    return [
        ("silence", torch.zeros(2, FS * 2), two, text, torch.tensor([6, 3])),
        ("clipped noise", loud, two, text, torch.tensor([6, 3])),
        ("clipped square wave", square.clone(), two, text, torch.tensor([6, 3])),
        ("30 s", torch.randn(1, FS * 30, generator=g) * 0.1, torch.tensor([FS * 30]),
         torch.randint(3, 28, (1, 60), generator=g), torch.tensor([60])),
        ("50 ms", torch.randn(2, 800, generator=g) * 0.1, torch.tensor([800, 600]), text,
         torch.tensor([6, 6])),
    ]


AUTOCAST = [
    ("cpu", torch.bfloat16),
    pytest.param("cuda", torch.bfloat16, marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_report.sh runs it)")),
    pytest.param("cuda", torch.float16, marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_report.sh runs it)")),
]


@pytest.mark.parametrize("device, dtype", AUTOCAST)
@pytest.mark.parametrize("config", ["omni_router", "switch"])
def test_autocast_training_stays_finite_on_adversarial_batches(config, device, dtype):
    """Autocast training as ESPnet's --use_amp runs it (fp16 with a gradient scaler), the
    router in float32: every loss and updated weight is finite, every gradient too where no
    scaler may skip a step (fp16: at most 3 steps skipped for overflow), and the model still
    learns (the loss of a repeated batch goes down)."""
    torch.manual_seed(0)
    model = build_model_from_config(CONF / "tiny" / f"{config}.yaml", 30, device=device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device) if dtype == torch.float16 else None
    router_dtypes = set()
    for router in model.encoder.routers:
        router.register_forward_hook(lambda m, i, out: router_dtypes.add(out.probs.dtype))

    def step(batch):
        optimizer.zero_grad()
        with torch.autocast(device, dtype=dtype):
            loss, stats, _ = model(*(t.to(device) for t in batch))
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return loss, stats

    skipped = 0
    for name, *b in adversarial_batches():
        for _ in range(2):
            router_dtypes.clear()
            scale = scaler.get_scale() if scaler else None
            loss, stats = step(b)
            assert torch.isfinite(loss), (name, stats)
            assert stats["loss_nonfinite"] == 0
            assert router_dtypes == {torch.float32}, name
            if scaler is None:
                for pname, p in model.named_parameters():
                    assert p.grad is None or torch.isfinite(p.grad).all(), (name, pname)
            else:
                skipped += scaler.get_scale() < scale
    assert skipped <= 3
    assert all(torch.isfinite(p).all() for p in model.parameters())
    losses = [step(adversarial_batches()[1][1:])[0].item() for _ in range(8)]
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("config", ["omni_router", "dense_transformer"])
def test_a_nonfinite_loss_is_counted_in_the_stats(config):
    torch.manual_seed(0)
    model = build_model_from_config(CONF / "tiny" / f"{config}.yaml", 30, device="cpu").train()
    speech, lengths, text, text_lengths = adversarial_batches()[1][1:]
    _, stats, _ = model(speech, lengths, text, text_lengths)
    assert stats["loss_nonfinite"] == 0
    speech = speech.clone()
    speech[0, 100] = float("nan")
    loss, stats, _ = model(speech, lengths, text, text_lengths)
    assert not torch.isfinite(loss)
    assert stats["loss_nonfinite"] == 1


def routing(expert_index, num_experts=4):
    """A RouterOutput sending token i to expert_index[i]."""
    index = torch.tensor(expert_index)[:, None]
    logits = torch.zeros(len(expert_index), num_experts)
    probs = logits.softmax(-1)
    return RouterOutput(logits, probs, index, probs.gather(1, index))


def test_collapse_monitor_reports_idle_and_dominant_experts_once_per_window():
    monitor = ExpertCollapseMonitor([1, 3], num_experts=4, window=3, max_share=0.9)
    balanced = routing([0, 1, 2, 3] * 5)
    skewed = routing([0] * 19 + [1])
    assert monitor.update([balanced, skewed], [1, 3]) == []
    assert monitor.update([balanced, skewed], [1, 3]) == []
    messages = monitor.update([balanced, skewed], [1, 3])  # end of steps 1-3
    assert messages == [
        "expert collapse: block 3: experts [2, 3] received no token in steps 1-3",
        "expert collapse: block 3: expert 0 took 95.0% of the tokens in steps 1-3 (above 90%)",
    ]
    # An expert that got a token anywhere in the window is not idle; the counts restart.
    assert monitor.update([balanced, routing([0] * 10)], [1, 3]) == []
    assert monitor.update([balanced, routing([1, 2, 3] + [0] * 7)], [1, 3]) == []
    assert monitor.update([balanced, routing([0] * 10)], [1, 3]) == []
    # A block skipped (layer drop) for a whole window is not reported.
    for _ in range(2):
        assert monitor.update([balanced], [1]) == []
    assert monitor.update([balanced], [1]) == []


def test_training_log_reports_a_collapse_as_it_happens(caplog):
    """A router whose weights are all zero sends every frame to expert 0: the model logs the
    collapse at the end of each window of training steps, and not in validation."""
    torch.manual_seed(0)
    model = build_model_from_config(CONF / "tiny" / "omni_router.yaml", 30, device="cpu")
    model.collapse_monitor.window = 2
    with torch.no_grad():
        model.encoder.routers[0].weight.zero_()
    b = adversarial_batches()[1][1:]

    def collapses():
        return [r.getMessage() for r in caplog.records if "collapse" in r.getMessage()]

    with caplog.at_level(logging.WARNING):
        model.eval()
        for _ in range(3):
            model(*b)
        assert not collapses()
        model.train()
        model(*b)
        assert not collapses()
        model(*b)
    messages = collapses()
    assert "expert collapse: block 1: experts [1, 2, 3] received no token in steps 1-2" in messages
    assert "expert collapse: block 2: expert 0 took 100.0% of the tokens in steps 1-2 (above 90%)" in messages


def test_collapse_check_is_off_with_window_zero():
    torch.manual_seed(0)
    from espnet2.tasks.asr import ASRTask

    parser = ASRTask.get_parser()
    args = parser.parse_args(["--config", str(CONF / "tiny" / "switch.yaml"), "--token_list", "x",
                              "--model_conf", "expert_collapse_window=0"])
    args.token_list = ["<blank>", "<unk>", "a", "<sos/eos>"]
    assert ASRTask.build_model(args).collapse_monitor is None


@pytest.mark.parametrize("config", ["omni_router", "dense_transformer"])
def test_an_utterance_longer_than_the_positional_table_encodes(config):
    """ESPnet's positional encodings start with a 5000-frame table; a longer input (here 5100
    encoder frames, 204 s of audio) extends it rather than failing."""
    torch.manual_seed(0)
    model = build_model_from_config(CONF / "tiny" / f"{config}.yaml", 30, device="cpu").eval()
    feats = torch.randn(1, 4 * 5100, 40)
    with torch.no_grad():
        out, lengths, _ = model.encoder(feats, torch.tensor([feats.size(1)]))
    assert out.shape == (1, 5100, 32) and lengths.tolist() == [5100]
    assert torch.isfinite(out).all()
