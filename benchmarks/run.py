"""Speed and memory of espnet-omni's MoE layer and encoders, measured side by side.

    .venv/bin/python benchmarks/run.py                  # everything: under 5 minutes on 2 CPU cores
    .venv/bin/python benchmarks/run.py --sections ffn   # one part (ffn, encoder, decode, memory)
    .venv/bin/python benchmarks/run.py --device cuda    # on a GPU (bf16 autocast, absolute times)

Every time is the median of interleaved repetitions (A, B, C, A, B, C, ...), and every ratio
divides two medians of the same run, so slow phases of a shared machine hit all candidates
alike. Beside each targeted ratio the table gives the quartiles of that ratio taken round by
round, which show how far a single round swings. The T=250 inference figures pool the rounds of
several fresh processes (``--processes``), since a small call's speed is set per process.
Prints a markdown table and writes it with all raw figures (per-round times included) to
``benchmarks/results/<date>.{md,json}``.

Sections:
  ffn      the MoE FFN (dropless, sort by expert) vs a dense FFN of expert size, vs the
           GShard / fairseq one-hot einsum dispatch (written below as the reference), and vs
           transformers' SwitchTransformersSparseMLP when transformers is installed; each
           with 1 and 2 threads (CPU). Outputs of the peers are compared with equal weights.
           Beside them the layer's parts that no dispatch can remove: the expert FFNs alone
           on tokens already sorted (training), their two GEMMs alone and one read of those
           GEMMs' weights (T=250 inference); and T=250 inference through 12 layers in turn,
           each with its own weights (E=8), in float32 and (CPU) dynamically quantized to int8.
  encoder  a training step (fwd + bwd + Adam) of the Omni-router encoder vs its dense twin vs
           ESPnet's stock ``transformer`` encoder of the same size, 16 utterances of 10 s,
           all with the 4x frame stacking of the project's configs.
  decode   real-time factor of greedy CTC decoding with the demo models of the recipe
           (egs2/omni_asr/asr1/conf), one utterance at a time and in batches of 16, one
           thread.
  memory   activation memory (bytes saved for backward) of one MoE layer as E grows, and peak
           memory of a training step and of decoding per model (one after another, the
           resident set's high-water mark reset before each).
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from espnet.nets.pytorch_backend.transformer.positionwise_feed_forward import (  # noqa: E402
    PositionwiseFeedForward,
)
from espnet_omni.moe import fused_experts  # noqa: E402
from espnet_omni.moe.experts import Experts, FeedForward  # noqa: E402
from espnet_omni.moe.layer import MoEFeedForward  # noqa: E402
from espnet_omni.moe.prepacked import gather_padded_with_ones, stacked_expert_weights  # noqa: E402
from espnet_omni.moe.router import Router  # noqa: E402

DEMO_CONF = REPO / "egs2" / "omni_asr" / "asr1" / "conf"

# Targets: (section key, description, limit, "max" or "min").
TARGETS = {
    "ffn_fwdbwd_e8": ("MoE FFN fwd+bwd / dense, E=8, T=4000", 1.10, "max"),
    "ffn_fwdbwd_e32": ("MoE FFN fwd+bwd / dense, E=32, T=4000", 1.20, "max"),
    "ffn_infer_t250_e8": ("MoE FFN inference / ESPnet dense FFN, E=8, T=250", 1.30, "max"),
    "einsum_speedup_e8": ("one-hot einsum time / ours, fwd+bwd, E=8, T=4000", 5.0, "min"),
    "einsum_speedup_e32": ("one-hot einsum time / ours, fwd+bwd, E=32, T=4000", 5.0, "min"),
    "encoder_step": ("Omni-router training step / dense twin", 1.15, "max"),
    "decode_rtf_batch1": ("Omni-router decoding RTF / dense, batch 1", 1.30, "max"),
    "decode_rtf_batch16": ("Omni-router decoding RTF / dense, batch 16 (the recipe's)", 1.30, "max"),
    "activation_growth": ("MoE activation memory E=32 / E=1", 1.05, "max"),
}


# --------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    candidates: Dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    calls: int = 1,
    warmup: int = 1,
) -> Dict[str, List[float]]:
    """Seconds per call of each candidate in each of ``repeats`` rounds; one round runs every
    candidate in turn (A, B, C, A, B, C, ...)."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / calls)
    return times


# Seconds of the dense FFN per round of T=250 inference (20 calls on the 2-core Xeon).
SMALL_ROUND_S = 0.04


def calls_per_round(fn: Callable[[], object], device: torch.device, seconds: float) -> int:
    """How many calls of ``fn`` take about ``seconds`` (at least 5): a call of a few ms is timed
    in groups, so that the clock's and Python's overheads stay small, and a slower machine
    runs fewer of them."""
    fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(3):
        fn()
    synchronize(device)
    return max(5, round(seconds / ((time.perf_counter() - start) / 3)))


def medians(times: Dict[str, List[float]]) -> Dict[str, float]:
    return {name: statistics.median(values) for name, values in times.items()}


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (how MoE models are trained there); plain fp32 on CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


# ------------------------------------------------------------------ the FFN peers


class GShardEinsumMoE(torch.nn.Module):
    """Reference: top-1 GShard dispatch with one-hot einsums, as fairseq's Top1Gate + MOELayer
    (and DeepSpeed's sharded_moe) compute it, running the experts of ``layer``.

    capacity = int(cf * ceil(S / E)); tokens over capacity are dropped (output 0). The
    (S, E, C) dispatch and combine tensors make time and memory grow with S^2.
    """

    def __init__(self, layer: MoEFeedForward, capacity_factor: float):
        super().__init__()
        self.router = layer.router
        self.experts = layer.experts.experts
        self.capacity_factor = capacity_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(S, d) -> (S, d)."""
        num_tokens, num_experts = x.size(0), len(self.experts)
        gates = torch.nn.functional.linear(x.float(), self.router.weight.float()).softmax(-1)
        capacity = int(self.capacity_factor * math.ceil(num_tokens / num_experts))
        mask1 = torch.nn.functional.one_hot(gates.argmax(-1), num_experts)
        locations1 = torch.cumsum(mask1, dim=0) - 1
        mask1 = mask1 * torch.lt(locations1, capacity)
        locations1_s = torch.sum(locations1 * mask1, dim=1)
        gates1_s = (gates * mask1).sum(dim=1)
        locations1_sc = torch.nn.functional.one_hot(locations1_s, capacity).to(gates.dtype)
        combine_sec = torch.einsum("s,se,sc->sec", gates1_s, mask1.to(gates.dtype), locations1_sc)
        dispatch_mask = combine_sec.bool()
        dispatched = torch.einsum("sec,sm->ecm", dispatch_mask.to(x.dtype), x)
        expert_out = torch.stack([expert(chunk) for expert, chunk in zip(self.experts, dispatched)])
        return torch.einsum("sec,ecm->sm", combine_sec.to(x.dtype), expert_out)


def hf_switch_mlp(layer: MoEFeedForward, num_tokens: int):
    """transformers' SwitchTransformersSparseMLP with ``layer``'s weights (biases must be 0),
    capacity large enough to drop nothing; None when transformers is not installed."""
    try:
        from transformers.models.switch_transformers.configuration_switch_transformers import (
            SwitchTransformersConfig,
        )
        from transformers.models.switch_transformers.modeling_switch_transformers import (
            SwitchTransformersSparseMLP,
        )
    except ImportError:
        return None
    first = layer.experts.experts[0]
    config = SwitchTransformersConfig(
        d_model=first.w_1.in_features, d_ff=first.w_1.out_features,
        num_experts=layer.experts.num_experts, expert_capacity=num_tokens, router_bias=False,
        router_jitter_noise=0.0, dropout_rate=0.0, dense_act_fn="relu", router_dtype="float32",
    )
    mlp = SwitchTransformersSparseMLP(config)
    with torch.no_grad():
        mlp.router.classifier.weight.copy_(layer.router.weight)
        for i, expert in enumerate(layer.experts.experts):
            mlp.experts[f"expert_{i}"].wi.weight.copy_(expert.w_1.weight)
            mlp.experts[f"expert_{i}"].wo.weight.copy_(expert.w_2.weight)
    return mlp


def moe_layer(d: int, f: int, num_experts: int, device: torch.device, zero_bias: bool = False):
    layer = MoEFeedForward(Router(d, num_experts), Experts(num_experts, d, f)).to(device)
    # Trained routers spread tokens; a freshly initialised one is near uniform as well.
    if zero_bias:
        with torch.no_grad():
            for expert in layer.experts.experts:
                expert.w_1.bias.zero_()
                expert.w_2.bias.zero_()
    return layer


# The FFN section's shapes: d_model, expert units, tokens of a training batch and of a small
# inference batch, and the expert counts compared.
FFN_D, FFN_F, FFN_T, FFN_T_INFER, FFN_EXPERTS = 256, 1024, 4000, 250, (8, 32)


def inference_call(module: torch.nn.Module, x: torch.Tensor, device: torch.device,
                   reshape: bool = False) -> Callable[[], object]:
    """A call of ``module`` on ``x`` (with a batch axis added if ``reshape``) in inference."""
    def run():
        with torch.no_grad(), autocast_for(device):
            return module(x[None] if reshape else x)
    return run


def bench_ffn(device: torch.device, threads: List[int], repeats: int, processes: int) -> Dict:
    """fwd+bwd and inference at T=4000 in this process, T=250 inference in ``processes``
    fresh ones (``small_inference_in_processes``)."""
    d, f, big, small = FFN_D, FFN_F, FFN_T, FFN_T_INFER
    results: Dict = {"d": d, "f": f, "T": big, "T_infer": small, "runs": [], "stack": []}
    torch.manual_seed(0)
    stacks = ffn_stacks(d, f, STACK_LAYERS, device)
    for num_threads in threads:
        torch.set_num_threads(num_threads)
        results["stack"].append(bench_ffn_stack(stacks, small, num_threads, device, repeats))
        for num_experts in FFN_EXPERTS:
            dense = PositionwiseFeedForward(d, f, 0.0).to(device)  # ESPnet's dense FFN
            packed_dense = FeedForward(d, f).to(device)  # ours: prepacked for CPU inference
            moe = moe_layer(d, f, num_experts, device, zero_bias=True)
            einsum = GShardEinsumMoE(moe, capacity_factor=1.25)
            hf = hf_switch_mlp(moe, big)
            x = torch.randn(big, d, device=device, requires_grad=True)
            grad = torch.randn(big, d, device=device)

            def train_step(module, reshape=False):
                def step():
                    # As after optimizer.zero_grad(): backward assigns, not accumulates.
                    module.zero_grad(set_to_none=True)
                    x.grad = None
                    with autocast_for(device):
                        out = module(x[None] if reshape else x)
                    out = out[0] if isinstance(out, tuple) else out
                    out.reshape(big, d).backward(grad.to(out.dtype).reshape(big, d))
                return step

            train = {"dense": train_step(dense), "ours": train_step(moe, reshape=True),
                     "einsum": train_step(einsum)}
            if hf is not None:
                train["hf_switch"] = train_step(hf, reshape=True)
            if device.type == "cpu":
                train["ours_expert_ffns"] = expert_ffns_only(moe, x, grad)
            for module in (dense, moe, einsum, hf):
                if module is not None:
                    module.train()
            fwdbwd_rounds = interleaved_times(train, device, repeats)
            for module in (dense, packed_dense, moe, einsum, hf):
                if module is not None:
                    module.eval()
            xi = x.detach()
            forward = {"dense": inference_call(dense, xi, device),
                       "dense_prepacked": inference_call(packed_dense, xi, device),
                       "ours": inference_call(moe, xi, device, reshape=True)}
            fwd = medians(interleaved_times(forward, device, repeats))
            fwdbwd = medians(fwdbwd_rounds)
            run = {"threads": num_threads, "E": num_experts, "fwdbwd_s": fwdbwd, "fwd_s": fwd,
                   "fwdbwd_rounds_s": fwdbwd_rounds}
            if num_threads == threads[0] and num_experts == 8:
                run["output_check"] = check_peer_outputs(moe, einsum, hf, xi)
            results["runs"].append(run)
            print(f"ffn threads={num_threads} E={num_experts}: fwd+bwd "
                  + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in fwdbwd.items()), flush=True)
    small_runs = small_inference_in_processes(device, threads, repeats, processes)
    for run in results["runs"]:
        run.update(small_runs[f"{run['threads']}/{run['E']}"])
        print(f"ffn threads={run['threads']} E={run['E']}: T={small} ours / dense per process "
              + ", ".join(f"{r:.2f}" for r in run["infer_T250_process_ratios"]), flush=True)
    torch.set_num_threads(threads[-1])
    return results


def bench_small_inference(device: torch.device, threads: List[int], repeats: int) -> Dict:
    """T=250 inference of the MoE layer (E in FFN_EXPERTS) against the dense FFN, with ``threads``
    threads: per-round times of every candidate, keyed "threads/E"."""
    d, f, small = FFN_D, FFN_F, FFN_T_INFER
    out = {}
    torch.manual_seed(0)
    for num_threads in threads:
        torch.set_num_threads(num_threads)
        for num_experts in FFN_EXPERTS:
            dense = PositionwiseFeedForward(d, f, 0.0).to(device).eval()
            packed_dense = FeedForward(d, f).to(device).eval()
            moe = moe_layer(d, f, num_experts, device, zero_bias=True).eval()
            x_small = torch.randn(small, d, device=device)
            candidates = {"dense": inference_call(dense, x_small, device),
                          "dense_prepacked": inference_call(packed_dense, x_small, device),
                          "ours": inference_call(moe, x_small, device, reshape=True)}
            if device.type == "cpu":
                candidates["ours_expert_gemms"] = expert_gemms_only(moe, x_small)
                candidates["ours_weights_read"] = expert_weights_read(moe)
            calls = calls_per_round(candidates["dense"], device, SMALL_ROUND_S)
            out[f"{num_threads}/{num_experts}"] = {
                "calls": calls, "rounds_s": interleaved_times(candidates, device, repeats, calls)
            }
    return out


def small_inference_in_processes(
    device: torch.device, threads: List[int], repeats: int, processes: int
) -> Dict[str, Dict]:
    """``bench_small_inference`` in ``processes`` fresh processes one after another, their
    rounds pooled (with 1, in this one): 3 x ``repeats`` rounds in all, split between them.

    On a shared 2-core VM one process measured the layer at T=250 1.28x the dense FFN and the
    next, same code, 1.74x, each steady within itself (the dense FFN took 2.7-4.2 ms per
    process, the layer 4.1-5.8). Whatever sets a small call's speed stays fixed for a
    process's life (not where the experts' weights lie: six copies of them in one process ran
    alike), so one process's ratio is one draw; pooling processes averages over draws.
    """
    if processes <= 1:
        per_process = [bench_small_inference(device, threads, 3 * repeats)]
    else:
        # About as many rounds in all as one process would run (3 x repeats).
        rounds = max(3, round(3 * repeats / processes))
        command = [sys.executable, str(Path(__file__).resolve()), "--small_inference_worker",
                   "--device", str(device), "--repeats", str(rounds),
                   "--threads", *map(str, threads)]
        per_process = []
        for _ in range(processes):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"T=250 inference worker ({' '.join(command)}) failed:\n"
                                   + done.stderr[-2000:])
            per_process.append(json.loads(done.stdout.strip().splitlines()[-1]))
    pooled = {}
    for key in per_process[0]:
        runs = [measured[key] for measured in per_process]
        rounds = {name: [t for run in runs for t in run["rounds_s"][name]]
                  for name in runs[0]["rounds_s"]}
        process_medians = [medians(run["rounds_s"]) for run in runs]
        pooled[key] = {
            "infer_T250_s": medians(rounds), "infer_T250_rounds_s": rounds,
            "infer_T250_calls": [run["calls"] for run in runs],
            "infer_T250_process_ratios": [m["ours"] / m["dense"] for m in process_medians],
        }
    return pooled


STACK_LAYERS = 12


def ffn_stacks(
    d: int, f: int, layers: int, device: torch.device
) -> Dict[str, List[torch.nn.Module]]:
    """``layers`` dense FFNs and ``layers`` E=8 MoE layers, each with its own weights, in eval
    mode: the FFNs of an encoder, run one after another. On CPU also both with every Linear
    dynamically quantized to int8, as ESPnet's ``asr_inference --quantize_asr_model true`` does."""
    stacks = {
        "dense": [PositionwiseFeedForward(d, f, 0.0).to(device).eval() for _ in range(layers)],
        "ours": [moe_layer(d, f, 8, device, zero_bias=True).eval() for _ in range(layers)],
    }
    if device.type == "cpu":
        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
            warnings.simplefilter("ignore")
            for name in ("dense", "ours"):
                stacks[f"{name}_int8"] = [
                    torch.ao.quantization.quantize_dynamic(layer, {torch.nn.Linear}, torch.qint8)
                    for layer in stacks[name]
                ]
    return stacks


def bench_ffn_stack(stacks: Dict[str, List[torch.nn.Module]], num_tokens: int, num_threads: int,
                    device: torch.device, repeats: int) -> Dict:
    """Inference on ``num_tokens`` through each stack of FFNs, seconds per layer: unlike one
    layer called again and again, no layer finds its weights in cache from its previous call
    (a dense stack of 12 holds 24 MB of weights, the MoE stack 12 x 16 MB)."""
    d = stacks["dense"][0].w_1.in_features
    x = torch.randn(1, num_tokens, d, device=device)

    def run(layers):
        def forward():
            with torch.no_grad(), autocast_for(device):
                for layer in layers:
                    layer(x)
        return forward

    rounds = interleaved_times({name: run(layers) for name, layers in stacks.items()}, device,
                               repeats * 3)
    layers = len(stacks["dense"])
    per_layer = {name: [t / layers for t in times] for name, times in rounds.items()}
    return {"threads": num_threads, "layers": layers, "T": num_tokens,
            "per_layer_s": medians(per_layer), "per_layer_rounds_s": per_layer}


def sorted_by_expert(layer: MoEFeedForward, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The order that sorts x's (N, d) tokens by the layer's top-1 choice, and the (E,) tokens
    per expert."""
    with torch.no_grad():
        expert_index = layer.router(x).expert_index.view(-1)
    order = expert_index.sort(stable=True).indices
    return order, expert_index.bincount(minlength=layer.experts.num_experts)


def expert_ffns_only(
    layer: MoEFeedForward, x: torch.Tensor, grad: torch.Tensor
) -> Callable[[], object]:
    """fwd+bwd of the layer's experts alone, through their training Function (fused_experts.py),
    on tokens already sorted as the layer sorts ``x``, input gradient included: the layer
    without routing, sort, gathers and gate."""
    order, counts = sorted_by_expert(layer, x)
    sizes = counts.tolist()
    rows = x.detach().index_select(0, order).requires_grad_()
    grad_rows = grad.index_select(0, order)
    experts = layer.experts.experts

    def step():
        layer.zero_grad(set_to_none=True)
        rows.grad = None
        fused_experts.experts_on_sorted_rows(rows, sizes, experts).backward(grad_rows)
    return step


def expert_gemms_only(layer: MoEFeedForward, x: torch.Tensor) -> Callable[[], object]:
    """The two grouped GEMMs of the layer's CPU inference path (weights stacked once, biases
    folded in) on tokens already sorted and padded as that path sorts and pads ``x``: the
    layer without routing, dispatch and activation."""
    w_1, w_2, _ = stacked_expert_weights(layer.experts.experts)
    order, counts = sorted_by_expert(layer, x)
    x_sorted = gather_padded_with_ones(x.detach(), order, w_1)
    offsets = counts.cumsum(0, dtype=torch.int32)

    def run():
        hidden = torch.nn.functional.grouped_mm(x_sorted, w_1, offs=offsets)
        return torch.nn.functional.grouped_mm(hidden, w_2, offs=offsets)
    return run


def expert_weights_read(layer: MoEFeedForward) -> Callable[[], object]:
    """One pass over the stacked weights that the layer's T=250 GEMMs read (a sum): how long
    bringing the E experts' weights to the cores takes on this machine, with no arithmetic to
    hide it behind. The dense FFN reads one expert's worth."""
    w_1, w_2, _ = stacked_expert_weights(layer.experts.experts)

    def run():
        return w_1.sum() + w_2.sum()
    return run


def check_peer_outputs(moe, einsum, hf, x) -> Dict[str, float]:
    """Max abs difference of the peers' outputs from ours on the same weights and input."""
    with torch.no_grad():
        checks = {}
        ours_cf = MoEFeedForward(moe.router, moe.experts, eval_capacity_factor=1.25).eval()
        checks["einsum_cf1.25_vs_ours_cf1.25"] = float(
            (einsum(x) - ours_cf(x[None])[0][0]).abs().max()
        )
        if hf is not None:
            checks["hf_switch_vs_ours"] = float((hf(x[None])[0] - moe(x[None])[0][0]).abs().max())
        checks["output_scale"] = float(moe(x[None])[0].abs().mean())
    return checks


# ------------------------------------------------------------------------ encoders


def build_encoder(kind: str, num_experts: int, size: Dict, device: torch.device):
    """One of the benchmarked encoders, all with 4x frame stacking as in the project's configs:
    ours through ``input_layer: stack`` on the fbank frames, ESPnet's stock encoder, which has
    no stacking layer, through its ``linear`` input layer on frames stacked beforehand
    (``stacked_input``)."""
    from espnet2.asr.encoder.transformer_encoder import TransformerEncoder

    from espnet_omni.encoder import DenseTransformerEncoder, OmniRouterEncoder

    common = dict(output_size=size["d"], attention_heads=size["heads"], linear_units=size["f"],
                  num_blocks=size["blocks"])
    if kind == "espnet_transformer":
        encoder = TransformerEncoder(size["idim"] * size["stack"], input_layer="linear", **common)
    else:
        ours = dict(input_layer="stack", stack_frames=size["stack"], **common)
        if kind == "dense_transformer":
            encoder = DenseTransformerEncoder(size["idim"], **ours)
        else:
            encoder = OmniRouterEncoder(size["idim"], num_experts=num_experts, **ours)
    return encoder.to(device)


def stacked_input(feats: torch.Tensor, lengths: torch.Tensor, stride: int):
    """(B, T, D) frames and (B,) lengths -> the (B, ceil(T / stride), D * stride) groups that
    ``input_layer: stack`` makes of them (``espnet_omni.encoder.group_frames``) and their (B,)
    counts, as input for ESPnet's encoder."""
    from espnet_omni.encoder import group_frames

    return group_frames(feats, stride), (lengths + stride - 1) // stride


def bench_encoder(device: torch.device, num_threads: int, repeats: int) -> Dict:
    """One training step (fwd, CTC loss, bwd, Adam) per encoder on 16 x 10 s of fbank."""
    from espnet2.asr.ctc import CTC

    torch.set_num_threads(num_threads)

    size = dict(idim=80, stack=4, d=256, heads=4, f=1024, blocks=12, vocab=500, batch=16,
                frames=1000)
    torch.manual_seed(0)
    feats = torch.randn(size["batch"], size["frames"], size["idim"], device=device)
    lengths = torch.full((size["batch"],), size["frames"], device=device)
    lengths[1::2] = int(size["frames"] * 0.8)  # some padding, as in a real batch
    target = torch.randint(1, size["vocab"], (size["batch"], 60), device=device)
    target_lengths = torch.full((size["batch"],), 60, device=device)
    stacked = stacked_input(feats, lengths, size["stack"])

    steps = {}
    params = {}
    for kind in ("dense_transformer", "omni_router", "espnet_transformer"):
        encoder = build_encoder(kind, 8, size, device).train()
        ctc = CTC(size["vocab"], size["d"]).to(device)
        modules = torch.nn.ModuleList([encoder, ctc])
        optimizer = torch.optim.Adam(modules.parameters(), lr=1e-4)
        params[kind] = sum(p.numel() for p in modules.parameters())

        inputs = stacked if kind == "espnet_transformer" else (feats, lengths)

        def step(encoder=encoder, ctc=ctc, optimizer=optimizer, inputs=inputs):
            with autocast_for(device):
                out, out_lengths, _ = encoder(*inputs)
            loss = ctc(out.float(), out_lengths, target, target_lengths)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        steps[kind] = step
    step_rounds = interleaved_times(steps, device, repeats)
    step_s = medians(step_rounds)
    print("encoder step: " + ", ".join(f"{k} {v:.2f} s" for k, v in step_s.items()), flush=True)
    return {"size": size, "experts": 8, "threads": torch.get_num_threads(), "params": params,
            "step_s": step_s, "step_rounds_s": step_rounds}


# ------------------------------------------------------------------------ decoding


def build_demo_model(name: str, device: torch.device):
    """The recipe's demo model (untrained weights, 150 tokens, no feature normalisation)."""
    import yaml

    import espnet_omni  # noqa: F401
    from espnet2.tasks.asr import ASRTask

    conf = yaml.safe_load((DEMO_CONF / f"train_asr_{name}.yaml").read_text())
    args = ASRTask.get_parser().parse_args(["--token_list", "none"])
    vars(args).update(conf)
    vars(args).update(token_list=[f"t{i}" for i in range(150)], normalize=None, input_size=None,
                      specaug=None, token_type="char")
    return ASRTask.build_model(args).to(device).eval()


def bench_decode(device: torch.device, repeats: int) -> Dict:
    """RTF of frontend + encoder + greedy CTC on 16 utterances of 4-10 s: one at a time
    (ESPnet's asr_inference) and as one padded batch (the recipe's asr_inference_ctc)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rate = 16000
    durations = [4.0 + 0.4 * i for i in range(16)]
    lengths = torch.tensor([int(rate * s) for s in durations], device=device)
    batch = torch.randn(len(durations), int(lengths.max()), device=device) * 0.1
    models = {name: build_demo_model(name, device)
              for name in ("dense_transformer", "switch", "omni_router")}

    def decode(model, batch_size):
        def run():
            with torch.no_grad():
                for start in range(0, len(durations), batch_size):
                    n = lengths[start:start + batch_size]
                    speech = batch[start:start + batch_size, : int(n.max())]
                    model.ctc.argmax(model.encode(speech, n)[0])
        return run

    audio = sum(durations)
    rtf, rounds = {}, {}
    for batch_size in (1, 16):
        seconds = interleaved_times(
            {name: decode(model, batch_size) for name, model in models.items()}, device, repeats
        )
        rounds[f"batch{batch_size}"] = seconds
        rtf[f"batch{batch_size}"] = {name: s / audio for name, s in medians(seconds).items()}
        print(f"decode RTF, batch {batch_size}: "
              + ", ".join(f"{k} {v:.4f}" for k, v in rtf[f"batch{batch_size}"].items()), flush=True)
    return {"audio_s": audio, "threads": 1, "rtf": rtf, "rounds_s": rounds}


# -------------------------------------------------------------------------- memory


def saved_activation_bytes(module: torch.nn.Module, fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct tensors autograd saves for backward during ``fn()``, parameters
    (and views of them) and leaf inputs excluded."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        leaf = tensor.requires_grad and tensor.grad_fn is None
        if not leaf and storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def glibc():
    """The C library for its allocator controls (Linux, glibc), or None where there is none."""
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


class PeakMemory:
    """Peak memory of a block of code: CUDA's allocator peak, or on CPU (Linux, glibc) the
    process's resident set high-water mark, reset on entry through /proc/self/clear_refs.

    On CPU, glibc is told to map every block over 64 KiB on its own and freed memory is
    returned to the system before the block, so the resident set follows live tensors.
    """

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cpu":
            self.libc = glibc()
            if self.libc is None:
                raise RuntimeError("peak CPU memory is measured through glibc (Linux only)")
            self.libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: fixed, no dynamic growth

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            self.libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # reset VmHWM to the current RSS
            self.before = self._status("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = self._status("VmHWM")
        self.increase_mb = (self.peak - self.before) / 2**20

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"/proc/self/status has no {field}")


def bench_memory(device: torch.device) -> Dict:
    d, f, tokens = 256, 1024, 4000
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.randn(1, tokens, d, device=device, requires_grad=True)
    dense = FeedForward(d, f).to(device)
    activations = {"dense": saved_activation_bytes(dense, lambda: dense(x))}
    for num_experts in (1, 2, 4, 8, 16, 32):
        layer = moe_layer(d, f, num_experts, device)
        activations[f"E={num_experts}"] = saved_activation_bytes(layer, lambda: layer(x)[0])
    einsum = GShardEinsumMoE(moe_layer(d, f, 8, device), 1.25)
    activations["einsum E=8"] = saved_activation_bytes(einsum, lambda: einsum(x[0]))
    print("activations (MB): " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in activations.items()),
          flush=True)

    # One training step on 16 x 10 s and decoding of one 10 s utterance per demo model.
    speech = torch.randn(16, 160000, device=device) * 0.1
    lengths = torch.full((16,), 160000, device=device)
    text = torch.randint(1, 149, (16, 40), device=device)
    text_lengths = torch.full((16,), 40, device=device)
    peaks = {}
    for name in ("dense_transformer", "switch", "omni_router"):
        model = build_demo_model(name, device)
        model.train()
        with PeakMemory(device) as train:
            model(speech, lengths, text, text_lengths)[0].backward()
        model.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad(), PeakMemory(device) as decode:
            model.ctc.argmax(model.encode(speech[:1], lengths[:1])[0])
        peaks[name] = {"train_mb": train.increase_mb, "decode_mb": decode.increase_mb}
        del model
    print("peak memory (MB over the built model): "
          + ", ".join(f"{k} train {v['train_mb']:.0f} decode {v['decode_mb']:.0f}"
                      for k, v in peaks.items()), flush=True)
    return {"T": tokens, "d": d, "f": f, "saved_bytes": activations, "peak": peaks}


# --------------------------------------------------------------------------- report


def ratio_inputs(results: Dict) -> Dict[str, Tuple[List[float], List[float]]]:
    """Each targeted ratio as (numerator, denominator): per-round times of the two candidates
    (one value each for memory)."""
    out = {}
    if "ffn" in results:
        for run in results["ffn"]["runs"]:
            tag = f"e{run['E']}@{run['threads']}t"
            train, small = run["fwdbwd_rounds_s"], run["infer_T250_rounds_s"]
            out[f"ffn_fwdbwd_{tag}"] = (train["ours"], train["dense"])
            out[f"ffn_infer_t250_{tag}"] = (small["ours"], small["dense"])
            out[f"einsum_speedup_{tag}"] = (train["einsum"], train["ours"])
    if "encoder" in results:
        step = results["encoder"]["step_rounds_s"]
        out["encoder_step"] = (step["omni_router"], step["dense_transformer"])
    if "decode" in results:
        for batch, seconds in results["decode"]["rounds_s"].items():
            out[f"decode_rtf_{batch}"] = (seconds["omni_router"], seconds["dense_transformer"])
    if "memory" in results:
        saved = results["memory"]["saved_bytes"]
        out["activation_growth"] = ([saved["E=32"]], [saved["E=1"]])
    return out


def figures(results: Dict) -> Dict[str, float]:
    """The targeted ratios: one median divided by the other, both from the same run."""
    return {name: statistics.median(num) / statistics.median(den)
            for name, (num, den) in ratio_inputs(results).items()}


def round_quartiles(results: Dict) -> Dict[str, Tuple[float, float]]:
    """First and third quartiles of each targeted ratio taken round by round (the two
    candidates timed back to back), where there are at least five rounds: how far one
    round's verdict swings on a shared machine."""
    return {name: tuple(statistics.quantiles([a / b for a, b in zip(num, den)], n=4)[::2])
            for name, (num, den) in ratio_inputs(results).items() if len(num) >= 5}


def markdown(results: Dict) -> str:
    lines = [f"Machine: {results['machine']}; torch {results['torch']}; device {results['device']}; "
             f"run {results['seconds']:.0f} s.", ""]
    if "ffn" in results:
        ffn = results["ffn"]
        lines += [
            f"**MoE FFN** (d={ffn['d']}, expert f={ffn['f']}, top-1, dropless; T={ffn['T']} "
            f"tokens unless stated), ms, median of interleaved runs. dense = ESPnet's "
            f"PositionwiseFeedForward of expert size; dense* = espnet-omni's FeedForward, which "
            f"like the experts runs CPU inference on weights laid out once; experts = the expert "
            f"FFNs alone (their training Function) on tokens already sorted, fwd+bwd; GEMMs = the "
            f"experts' two grouped GEMMs alone on tokens already sorted (T=250); read = one pass "
            f"over those GEMMs' weights (a sum; T=250 rows need every expert's); einsum = GShard "
            f"one-hot dispatch (cf 1.25); HF = transformers' SwitchTransformersSparseMLP. Ratios: "
            f"ours / dense, except einsum / ours and HF / ours.",
            "",
            "| threads | E | fwd+bwd dense | ours | ratio | experts | experts / dense | einsum | ratio "
            "| HF | ratio | inference dense | dense* | ours | ratio | T=250 dense | dense* | ours "
            "| ratio | ours / dense* | GEMMs | GEMMs / dense | read / dense |",
            "|" + " --- |" * 23,
        ]
        for run in ffn["runs"]:
            fb, fw, sm = run["fwdbwd_s"], run["fwd_s"], run["infer_T250_s"]
            hf = (f"{fb['hf_switch'] * 1e3:.1f} | {fb['hf_switch'] / fb['ours']:.1f}x"
                  if "hf_switch" in fb else "n/a | n/a")
            lines.append(
                f"| {run['threads']} | {run['E']} | {fb['dense'] * 1e3:.1f} | {fb['ours'] * 1e3:.1f}"
                f" | {fb['ours'] / fb['dense']:.2f}x"
                + (f" | {fb['ours_expert_ffns'] * 1e3:.1f} | {fb['ours_expert_ffns'] / fb['dense']:.2f}x"
                   if "ours_expert_ffns" in fb else " | n/a | n/a")
                + f" | {fb['einsum'] * 1e3:.0f}"
                f" | {fb['einsum'] / fb['ours']:.1f}x | {hf} | {fw['dense'] * 1e3:.1f}"
                f" | {fw['dense_prepacked'] * 1e3:.1f} | {fw['ours'] * 1e3:.1f}"
                f" | {fw['ours'] / fw['dense']:.2f}x | {sm['dense'] * 1e3:.2f}"
                f" | {sm['dense_prepacked'] * 1e3:.2f} | {sm['ours'] * 1e3:.2f}"
                f" | {sm['ours'] / sm['dense']:.2f}x | {sm['ours'] / sm['dense_prepacked']:.2f}x"
                + (f" | {sm['ours_expert_gemms'] * 1e3:.2f} | {sm['ours_expert_gemms'] / sm['dense']:.2f}x"
                   f" | {sm['ours_weights_read'] / sm['dense']:.2f}x |"
                   if "ours_expert_gemms" in sm else " | n/a | n/a | n/a |")
            )
        spans = [(run["threads"], run["E"], run["infer_T250_process_ratios"])
                 for run in ffn["runs"]]
        lines += ["", f"T={ffn['T_infer']} columns: rounds of {len(spans[0][2])} process(es) "
                  "pooled; ours / dense per process, lowest-highest: "
                  + ", ".join(f"{t} thread(s) E={e} {min(r):.2f}-{max(r):.2f}"
                              for t, e, r in spans)]
        if ffn.get("stack"):
            first = ffn["stack"][0]
            per_thread = []
            for stack in ffn["stack"]:
                per_layer = stack["per_layer_s"]
                dense = per_layer["dense"]
                per_thread.append(f"{stack['threads']} thread(s) " + ", ".join(
                    f"{name} {seconds * 1e3:.2f} ({seconds / dense:.2f}x)"
                    for name, seconds in per_layer.items()))
            lines += ["", f"Inference on T={first['T']} through {first['layers']} FFN layers in "
                      "turn, each with its own weights, as in an encoder (E=8), ms per layer and "
                      "ratio to the float32 dense FFN; _int8 = every Linear dynamically quantized "
                      "(ESPnet's `--quantize_asr_model true`): " + "; ".join(per_thread)]
        checks = next((r["output_check"] for r in ffn["runs"] if "output_check" in r), {})
        if checks:
            lines += ["", "Output check, same weights and input (max abs difference; mean |output| "
                      f"{checks['output_scale']:.3f}): "
                      + ", ".join(f"{k} {v:.1e}" for k, v in checks.items() if k != "output_scale")]
    if "encoder" in results:
        enc = results["encoder"]
        size, step = enc["size"], enc["step_s"]
        lines += ["", f"**Encoder training step** ({size['stack']}x frame stacking, d={size['d']}, "
                  f"{size['blocks']} blocks, FFN {size['f']}, {enc['experts']} experts, CTC {size['vocab']}; batch "
                  f"{size['batch']} x 10 s; Adam; {enc['threads']} threads):", "",
                  "| encoder | parameters | s / step | ratio to dense twin |", "| --- | --- | --- | --- |"]
        for kind, seconds in step.items():
            lines.append(f"| {kind} | {enc['params'][kind] / 1e6:.1f}M | {seconds:.2f}"
                         f" | {seconds / step['dense_transformer']:.2f}x |")
    if "decode" in results:
        dec = results["decode"]
        lines += ["", f"**Decoding** (recipe demo models, untrained weights, frontend + encoder + greedy "
                  f"CTC, {dec['threads']} thread, {dec['audio_s']:.0f} s of audio in 16 utterances), "
                  "real-time factor:", "", "| batch | " + " | ".join(dec["rtf"]["batch1"]) + " |",
                  "| --- |" + " --- |" * len(dec["rtf"]["batch1"])]
        for batch, rtf in dec["rtf"].items():
            dense_rtf = rtf["dense_transformer"]
            lines.append(f"| {batch[5:]} | "
                         + " | ".join(f"{v:.4f} ({v / dense_rtf:.2f}x)" for v in rtf.values()) + " |")
    if "memory" in results:
        mem = results["memory"]
        saved = mem["saved_bytes"]
        lines += ["", f"**Activation memory** of one FFN layer, T={mem['T']} (MB saved for backward): "
                  + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in saved.items())]
        lines += ["", "**Peak memory** above the built demo model, MB (CPU: resident set high-water "
                  "mark; train = one step on 16 x 10 s, decode = one 10 s utterance): "
                  + ", ".join(f"{k} train {v['train_mb']:.0f} / decode {v['decode_mb']:.0f}"
                              for k, v in mem["peak"].items())]
    got, quartiles = figures(results), round_quartiles(results)
    lines += ["", "Targets: measured = ratio of the two medians; rounds = quartiles of the same "
              "ratio taken round by round (both candidates timed back to back).", "",
              "| target | limit | measured | rounds | met |", "| --- | --- | --- | --- | --- |"]
    for key, (text, limit, kind) in TARGETS.items():
        # FFN targets are checked at every thread count measured.
        for name in sorted(k for k in got if k == key or k.startswith(key + "@")):
            threads = name.partition("@")[2]
            label = f"{text}, {threads[:-1]} thread(s)" if threads else text
            met = got[name] <= limit if kind == "max" else got[name] >= limit
            sign = "<=" if kind == "max" else ">="
            spread = "{:.2f}-{:.2f}".format(*quartiles[name]) if name in quartiles else "n/a"
            lines.append(f"| {label} | {sign} {limit} | {got[name]:.2f} | {spread}"
                         f" | {'yes' if met else 'NO'} |")
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else its architecture. Which CPU it is
    matters: the BLAS's small products differ most between vendors (see benchmarks/README.md)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def steady_cpu_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds for the timed sections (Linux, glibc only).

    By default glibc maps large blocks on their own, unmaps them when freed and moves its
    mmap threshold as the process runs, so the same dense FFN took 2.9 ms or 4-5 ms per call
    depending on what was allocated before. With fixed thresholds freed buffers are reused
    (as jemalloc and tcmalloc do, which PyTorch's CPU tuning guide recommends) and every
    candidate runs under the same, repeatable allocator. Returns whether it applied.
    """
    libc = glibc()
    if libc is None:
        return False
    trim = libc.mallopt(-1, 256 * 2**20)  # M_TRIM_THRESHOLD
    mmap = libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD (glibc's maximum)
    return bool(trim and mmap)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["ffn", "encoder", "decode", "memory"],
                        choices=["ffn", "encoder", "decode", "memory"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="CPU threads for the FFN section (encoder: the last)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repetitions")
    parser.add_argument("--processes", type=int, default=5,
                        help="fresh processes for the T=250 inference figures (1: this one)")
    parser.add_argument("--output_dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--small_inference_worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if args.small_inference_worker:  # one of small_inference_in_processes' processes
        if device.type == "cpu":
            steady_cpu_allocator()
        print(json.dumps(bench_small_inference(device, args.threads, args.repeats)))
        return

    results: Dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "steady_allocator": device.type == "cpu" and steady_cpu_allocator(),
    }
    start = time.perf_counter()
    sections = {
        "ffn": lambda: bench_ffn(
            device, args.threads if device.type == "cpu" else [1], args.repeats, args.processes
        ),
        # Five rounds at the default: a step's time swings 10-20% from round to round.
        "encoder": lambda: bench_encoder(device, args.threads[-1], max(3, args.repeats - 2)),
        "decode": lambda: bench_decode(device, args.repeats),
        "memory": lambda: bench_memory(device),
    }
    results["section_seconds"] = {}
    for name, bench in sections.items():
        if name in args.sections:
            section_start = time.perf_counter()
            results[name] = bench()
            results["section_seconds"][name] = time.perf_counter() - section_start
    results["figures"] = figures(results)
    results["round_quartiles"] = round_quartiles(results)
    results["seconds"] = time.perf_counter() - start

    table = markdown(results)
    print("\n" + table)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    stem.with_suffix(".md").write_text(table + "\n")
    print(f"\n{results['seconds']:.0f} s ("
          + ", ".join(f"{k} {v:.0f} s" for k, v in results["section_seconds"].items())
          + f"); wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
