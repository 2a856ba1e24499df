"""GPU memory estimates (espnet_omni.analysis.memory, ``check_gpu_configs``): static memory is
the parameter arithmetic of the built model, the activation measurement agrees with torch's
allocator accounting, grows linearly with frames, and the command names what does not fit."""

import subprocess
import sys

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from espnet_omni.analysis import memory
from espnet_omni.bin import check_gpu_configs
from espnet_omni.configs import build_model_from_config, documented_counts

from conftest import CONF, REPO

TINY = CONF / "tiny" / "omni_router.yaml"
VOCAB = 30


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model_from_config(TINY, VOCAB, device="cpu")


def test_static_memory_is_what_adamw_allocates(tiny_model):
    static = memory.static_memory(tiny_model)
    params = list(tiny_model.parameters())
    count = sum(p.numel() for p in params)
    assert static.parameters == count
    assert (static.weights, static.gradients, static.optimizer) == (4 * count, 4 * count, 8 * count)
    assert static.total == 16 * count

    # What a training step really holds: the gradients and AdamW's state tensors.
    model = tiny_model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    forward = memory.training_forward(model, 2, 200, VOCAB)
    forward()[1].backward()
    optimizer.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params)
    moments = sum(
        state[key].numel() * state[key].element_size()
        for state in optimizer.state.values() for key in ("exp_avg", "exp_avg_sq")
    )
    optimizer.zero_grad(set_to_none=True)
    assert (grads, moments) == (static.gradients, static.optimizer)


def test_static_memory_of_a_real_shape_on_meta():
    config = CONF / "libriheavy" / "omni_router.yaml"
    documented = documented_counts(config)
    static = memory.static_memory(build_model_from_config(config, documented["vocab_size"]))
    assert static.parameters == documented["total"]
    assert static.total == 16 * documented["total"]


def test_saved_bytes_equal_what_the_allocator_keeps_for_backward(tiny_model):
    """Independent measure: torch's profiler counts every CPU allocation and free; what a
    forward leaves allocated while its loss (and so its graph) is alive is what autograd
    saved, plus the loss and statistics (a few scalars)."""
    torch.manual_seed(0)
    model = tiny_model.train()
    forward = memory.training_forward(model, 4, 500, VOCAB)

    def run():
        with memory.CudaKernels("math"):
            return forward()

    saved = memory.saved_tensor_bytes(model, run)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        frames, loss = run()
    kept = sum(event.self_cpu_memory_usage for event in prof.key_averages())
    del loss
    assert frames["input"] == 4 * 500
    assert saved > 1_000_000
    assert abs(kept - saved) <= 0.01 * saved, (kept, saved)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_activations_grow_linearly_with_frames(tiny_model, dtype):
    fit = memory.measure_activations(tiny_model, VOCAB, dtype, utterance_frames=1000)
    assert sorted(fit.measured) == [1000, 2000]
    direct = memory.measure_activations(
        tiny_model, VOCAB, dtype, utterance_frames=1000, utterances=(1, 4)
    )
    assert direct.measured[4000] == pytest.approx(fit.bytes_for(4000), rel=0.01)
    assert fit.per_frame > 0
    if dtype == torch.float32:
        # No autocast: nothing saved is independent of the batch.
        assert fit.fixed < 0.01 * fit.bytes_for(1000)


def test_expert_count_extrapolation_matches_a_measured_model():
    """The extrapolation used for models too large for the CPU: linear in E through two
    measured expert counts, and with one, the same bytes per frame plus a bfloat16 copy of
    every added weight."""
    measured, parameters = {}, {}
    for experts in (4, 8, 16):
        with memory.config_with_experts(TINY, experts) as config:
            torch.manual_seed(0)
            model = build_model_from_config(config, VOCAB, device="cpu")
        measured[experts] = memory.measure_activations(
            model, VOCAB, torch.bfloat16, utterance_frames=400
        )
        parameters[experts] = memory.static_memory(model).parameters
    two = memory.extrapolate_activations(
        {e: measured[e] for e in (4, 8)}, parameters, 16, parameters[16]
    )
    assert two.per_frame == pytest.approx(measured[16].per_frame, rel=0.01)
    assert two.fixed == pytest.approx(measured[16].fixed, rel=0.02)
    one = memory.extrapolate_activations({8: measured[8]}, parameters, 16, parameters[16])
    assert one.fixed == pytest.approx(measured[16].fixed, rel=0.05)
    # Only the router's (frames, E) tensors grow with E: a few percent per doubling here.
    assert one.per_frame == pytest.approx(measured[16].per_frame, rel=0.1)


def testmath_attention_matches_torch():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(memory.math_attention(q, k, v, mask), expected)


def test_max_batch_is_what_fits():
    static = memory.StaticMemory(parameters=1, weights=4 * 2**30, gradients=4 * 2**30,
                                 optimizer=8 * 2**30)
    acts = memory.ActivationMemory(torch.bfloat16, "math", 1000, fixed=2**30,
                                   per_frame=2**20)
    frames = memory.max_batch_frames(static, acts, 80 * 2**30, 8 * 2**30)
    assert static.total + acts.bytes_for(frames) <= 72 * 2**30 < static.total + acts.bytes_for(
        frames + 1)
    assert memory.max_batch_frames(static, acts, 16 * 2**30, 0) == 0


def test_command_prints_a_row_per_config(capsys):
    configs = sorted((CONF / "tiny").glob("*.yaml"))
    check_gpu_configs.main([*map(str, configs), "--gpu_memory_gb", "80",
                            "--utterance_seconds", "2"])
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith(f"| {CONF}")]
    assert len(rows) == 3
    for config, row in zip(configs, rows):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == str(config)
        assert int(cells[1].replace(",", "")) == documented_counts(config)["total"]
        assert int(cells[10].replace(",", "")) > 0


def test_command_names_the_config_that_does_not_fit(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("encoder: omni_router\nencoder_conf:\n    num_expert: 4\n")
    result = subprocess.run(
        [sys.executable, "-m", "espnet_omni.bin.check_gpu_configs", str(TINY), str(broken),
         "--gpu_memory_gb", "0.001", "--utterance_seconds", "2", "--vocab_size", "30"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode != 0
    assert f"{TINY}: one utterance of 2 s does not fit 0.001 GiB" in result.stderr
    assert f"{broken}: does not build or run" in result.stderr
