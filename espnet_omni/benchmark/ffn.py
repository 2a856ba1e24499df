"""The FFN section: the MoE layer against a dense FFN of expert size and against its peers.

The MoE FFN (top-1, dropless, sort by expert) is timed against ESPnet's dense
``PositionwiseFeedForward`` of expert size, against espnet-omni's ``FeedForward`` (the dense twin's
FFN, which runs float32 CPU inference on its weights transposed once), against the GShard /
fairseq one-hot einsum dispatch (``peers.GShardEinsumMoE``) and against transformers'
``SwitchTransformersSparseMLP`` when transformers is installed; on CPU with 1 and 2 threads.
The peers' outputs are compared with ours on equal weights (``check_peer_outputs``).

* T=4000 tokens: fwd+bwd (training) and inference.
* T=250 tokens (a 10 s utterance after 4x frame stacking): inference, in several fresh
  processes (``small_inference_in_processes``), since a small call's speed is set per process.

Beside them, on CPU, the layer's parts that no dispatch can remove: the expert FFNs alone on
rows already sorted by expert, through their training Function (``expert_ffns_only``); the
experts' two float32 grouped GEMMs alone on rows already sorted, no biases
(``expert_gemms_only``, T=250); and one read of the experts' weights and biases
(``expert_weights_read``: T=250 rows reach every expert, so every expert's weights are read).
And T=250 inference through 12 layers in turn, each with its own weights (E=8), as in an
encoder (``bench_ffn_stack``), in float32 and, on CPU, with every ``torch.nn.Linear``
dynamically quantized to int8 (ESPnet's ``--quantize_asr_model true``).

Run as ``python -m espnet_omni.benchmark.ffn --device cpu --threads 1 2 --repeats 3``, this
module is one of ``small_inference_in_processes``' processes: it runs
``bench_small_inference`` and prints its result as JSON on the last line.
"""

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from espnet_omni.benchmark.peers import GShardEinsumMoE, hf_switch_mlp, moe_layer
from espnet_omni.benchmark.timing import (
    autocast_for,
    calls_per_round,
    inference_call,
    interleaved_times,
    medians,
    steady_cpu_allocator,
    training_call,
)
from espnet_omni.moe.dispatch import sort_by_expert
from espnet_omni.moe.eager_experts import experts_on_sorted_rows
from espnet_omni.moe.feed_forward import FeedForward
from espnet_omni.moe.layer import MoEFeedForward

# The worker processes run this module, from the repository root.
WORKER_MODULE = "espnet_omni.benchmark.ffn"
REPO = Path(__file__).resolve().parents[2]

# The section's shapes: d_model, expert units, tokens of a training batch and of a small
# inference batch, and the expert counts compared.
FFN_D, FFN_F, FFN_T, FFN_T_INFER, FFN_EXPERTS = 256, 1024, 4000, 250, (8, 32)

# Seconds of the dense FFN per round of T=250 inference.
SMALL_ROUND_S = 0.04

# FFN layers in turn in the stack measurement.
STACK_LAYERS = 12


def dense_ffn(d: int, f: int, device: torch.device) -> torch.nn.Module:
    """ESPnet's dense PositionwiseFeedForward (no dropout) on ``device``."""
    from espnet_omni.espnet_nets import PositionwiseFeedForward

    return PositionwiseFeedForward(d, f, 0.0).to(device)


def bench_ffn(device: torch.device, threads: List[int], repeats: int, processes: int) -> Dict:
    """fwd+bwd and inference at T=4000 in this process, T=250 inference in ``processes``
    fresh ones (``small_inference_in_processes``), the stacks of 12 layers, for each thread
    count and E in FFN_EXPERTS."""
    d, f, big, small = FFN_D, FFN_F, FFN_T, FFN_T_INFER
    results: Dict = {"d": d, "f": f, "T": big, "T_infer": small, "runs": [], "stack": []}
    torch.manual_seed(0)
    stacks = ffn_stacks(d, f, STACK_LAYERS, device)
    for num_threads in threads:
        torch.set_num_threads(num_threads)
        results["stack"].append(bench_ffn_stack(stacks, small, num_threads, device, repeats))
        for num_experts in FFN_EXPERTS:
            dense = dense_ffn(d, f, device)
            ours_dense = FeedForward(d, f).to(device)
            moe = moe_layer(d, f, num_experts, device, zero_bias=True)
            einsum = GShardEinsumMoE(moe, capacity_factor=1.25)
            hf = hf_switch_mlp(moe, big)
            x = torch.randn(big, d, device=device, requires_grad=True)
            grad = torch.randn(big, d, device=device)

            def train_step(module, reshape=False):
                return training_call(module, x, grad, device, reshape)

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
            for module in (dense, ours_dense, moe, einsum, hf):
                if module is not None:
                    module.eval()
            xi = x.detach()
            forward = {"dense": inference_call(dense, xi, device),
                       "dense_transposed": inference_call(ours_dense, xi, device),
                       "ours": inference_call(moe, xi, device, batch_axis=True)}
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
    """T=250 inference of the MoE layer (E in FFN_EXPERTS) against the dense FFNs, with
    ``threads`` threads: per-round times of every candidate, keyed "threads/E"."""
    d, f, small = FFN_D, FFN_F, FFN_T_INFER
    out = {}
    torch.manual_seed(0)
    for num_threads in threads:
        torch.set_num_threads(num_threads)
        for num_experts in FFN_EXPERTS:
            dense = dense_ffn(d, f, device).eval()
            ours_dense = FeedForward(d, f).to(device).eval()
            moe = moe_layer(d, f, num_experts, device, zero_bias=True).eval()
            x_small = torch.randn(small, d, device=device)
            candidates = {"dense": inference_call(dense, x_small, device),
                          "dense_transposed": inference_call(ours_dense, x_small, device),
                          "ours": inference_call(moe, x_small, device, batch_axis=True)}
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

    Whatever sets a small call's speed stays fixed for a process's life, so one process's
    ratio is one draw; pooling processes averages over draws, and the ratio of each process
    is kept beside the pooled one.
    """
    if processes <= 1:
        per_process = [bench_small_inference(device, threads, 3 * repeats)]
    else:
        # About as many rounds in all as one process would run (3 x repeats).
        rounds = max(3, round(3 * repeats / processes))
        command = [sys.executable, "-m", WORKER_MODULE, "--device", str(device),
                   "--repeats", str(rounds),
                   "--threads", *map(str, threads)]
        per_process = []
        for _ in range(processes):
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
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


def ffn_stacks(
    d: int, f: int, layers: int, device: torch.device
) -> Dict[str, List[torch.nn.Module]]:
    """``layers`` dense FFNs and ``layers`` E=8 MoE layers, each with its own weights, in eval
    mode: the FFNs of an encoder, run one after another. On CPU also each stack with every
    ``torch.nn.Linear`` dynamically quantized to int8, as ESPnet's ``asr_inference
    --quantize_asr_model true`` does, where that quantizes something: the experts' stacked
    weights are no Linear layers, so a quantized MoE stack (``ours_int8``) is left out."""
    stacks = {
        "dense": [dense_ffn(d, f, device).eval() for _ in range(layers)],
        "ours": [moe_layer(d, f, 8, device, zero_bias=True).eval() for _ in range(layers)],
    }
    if device.type == "cpu":
        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
            warnings.simplefilter("ignore")
            for name in ("dense", "ours"):
                if not any(isinstance(m, torch.nn.Linear) for m in stacks[name][0].modules()):
                    continue
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
    per expert: the layer's own dispatch (``sort_by_expert``)."""
    with torch.no_grad():
        dispatch = sort_by_expert(layer.router(x).expert_index, layer.experts.num_experts)
    return dispatch.order, torch.diff(dispatch.offsets, prepend=dispatch.offsets.new_zeros(1))


def expert_ffns_only(
    layer: MoEFeedForward, x: torch.Tensor, grad: torch.Tensor
) -> Callable[[], object]:
    """fwd+bwd of the layer's experts alone, through their training Function
    (``eager_experts.experts_on_sorted_rows``), on rows already sorted as the layer sorts ``x``,
    input gradient included: the layer without routing, sort, gathers and gate."""
    order, counts = sorted_by_expert(layer, x)
    sizes = counts.tolist()
    rows = x.detach().index_select(0, order).requires_grad_()
    grad_rows = grad.index_select(0, order)
    experts = layer.experts

    def step():
        layer.zero_grad(set_to_none=True)
        rows.grad = None
        experts_on_sorted_rows(
            rows, sizes, experts.weights, experts.activation, experts.dropout
        ).backward(grad_rows)
    return step


def expert_gemms_only(layer: MoEFeedForward, x: torch.Tensor) -> Callable[[], object]:
    """The two float32 grouped GEMMs of the layer's CPU inference path, on ``w_1`` and ``w_2``
    as they are, on rows already sorted as the layer sorts ``x``: the layer without routing,
    dispatch, biases and activation."""
    grouped_mm = torch.nn.functional.grouped_mm
    w_1, w_2 = layer.experts.w_1.detach(), layer.experts.w_2.detach()
    order, counts = sorted_by_expert(layer, x)
    rows = x.detach().index_select(0, order)
    offsets = counts.cumsum(0, dtype=torch.int32)

    def run():
        hidden = grouped_mm(rows, w_1, offs=offsets)
        return grouped_mm(hidden, w_2, offs=offsets)
    return run


def expert_weights_read(layer: MoEFeedForward) -> Callable[[], object]:
    """One pass over the experts' weights and biases (a sum): how long bringing the E experts'
    weights to the cores takes on this machine, with no arithmetic to hide it behind. The
    dense FFN reads one expert's worth."""
    w_1, b_1, w_2, b_2 = (weight.detach() for weight in layer.experts.weights)

    def run():
        return w_1.sum() + b_1.sum() + w_2.sum() + b_2.sum()
    return run


def check_peer_outputs(moe: MoEFeedForward, einsum: GShardEinsumMoE,
                       hf: Optional[torch.nn.Module], x: torch.Tensor) -> Dict[str, float]:
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


def main(argv: Optional[List[str]] = None) -> None:
    """One worker process of ``small_inference_in_processes``."""
    parser = argparse.ArgumentParser(
        description="T=250 inference of the MoE layer and the dense FFNs; prints JSON"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        steady_cpu_allocator()
    print(json.dumps(bench_small_inference(device, args.threads, args.repeats)))


if __name__ == "__main__":
    main()
