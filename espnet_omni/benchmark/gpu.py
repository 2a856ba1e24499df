"""The MoE layer and the encoders on a CUDA GPU at the released shape (d 768, FFN 3072).

Three parts, all under bfloat16 autocast as ESPnet trains on GPUs:

* ``bench_layer``: one FFN layer's fwd+bwd and forward on T tokens, the MoE layer against
  ESPnet's dense ``PositionwiseFeedForward``, beside its eager implementation, transformers'
  ``SwitchTransformersSparseMLP`` and the floor: the two bfloat16 grouped GEMMs alone on rows
  already sorted by expert, with weights already in bfloat16 (``floor``) and with the cast of
  float32 weights that every call under autocast pays (``floor+cast``).
* ``bench_training_step``: a training step (fwd, CTC, router losses, bwd, fused AdamW) of the
  dense twin, Switch and Omni-router encoders at the Libriheavy shape of
  ``conf/libriheavy``: 12 blocks, 8 experts, 4x frame stacking, 48 utterances of 15 s;
  tokens per second and peak memory.
* ``count_synchronisations``: the host synchronisations of one training step, counted by
  torch's sync debug mode, for the encoder alone (its forward, router losses, routing
  statistics, backward and the optimizer step) and for the whole step with ESPnet's CTC.
"""

import statistics
import time
import warnings
from typing import Callable, Dict, List

import torch

from espnet_omni.benchmark.ffn import sorted_by_expert
from espnet_omni.benchmark.peers import hf_switch_mlp, moe_layer
from espnet_omni.benchmark.timing import (
    PeakMemory,
    autocast_for,
    inference_call,
    interleaved_times,
    medians,
    synchronize,
    training_call,
)

D_MODEL, FFN_UNITS = 768, 3072
LAYER_SHAPES = ((16384, 8), (65536, 8), (16384, 32), (65536, 32))
# Candidates too slow to time at every shape: measured at the first one only.
FIRST_SHAPE_ONLY = ("hf_switch",)

# Libriheavy release shape (conf/libriheavy/*.yaml) and the step's batch.
STEP_SIZE = dict(idim=80, stack=4, d=768, heads=12, f=3072, blocks=12, experts=8,
                 vocab=5000, batch=48, frames=1500, target=60)


def sorted_rows(layer, x: torch.Tensor):
    """x's rows sorted by the layer's top-1 choice (detached) and the (E,) int32 group ends."""
    order, counts = sorted_by_expert(layer, x)
    return x.detach().index_select(0, order), counts.cumsum(0, dtype=torch.int32)


def grouped_gemms_alone(layer, x: torch.Tensor, grad: torch.Tensor, cast: bool,
                        backward: bool = True) -> Callable[[], object]:
    """fwd(+bwd) of the layer's two bfloat16 grouped GEMMs on rows already sorted by expert, no
    bias, activation or dispatch: the floor of any dispatch. ``cast``: cast the float32
    weights to bfloat16 in the call, as autocast does to a dense Linear's weight."""
    grouped_mm = torch.nn.functional.grouped_mm
    rows, offsets = sorted_rows(layer, x)
    rows = rows.bfloat16().requires_grad_(backward)
    grad = grad.bfloat16()
    w_1, w_2 = layer.experts.w_1, layer.experts.w_2
    fixed = (w_1.detach().bfloat16().requires_grad_(backward),
             w_2.detach().bfloat16().requires_grad_(backward))

    def run():
        weights = (w_1.bfloat16(), w_2.bfloat16()) if cast else fixed
        rows.grad = None
        for weight in (w_1, w_2, *fixed):
            weight.grad = None
        with torch.set_grad_enabled(backward):
            out = grouped_mm(grouped_mm(rows, weights[0], offs=offsets).relu(), weights[1],
                             offs=offsets)
            if backward:
                out.backward(grad)
    return run


def host_seconds(fn: Callable[[], object], device: torch.device, calls: int = 10) -> float:
    """Median seconds the host spends issuing one call (its return, not its kernels' end):
    where this reaches the call's synchronised time, the host sets the pace."""
    times = []
    for _ in range(calls):
        synchronize(device)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    synchronize(device)
    return statistics.median(times)


def bench_layer(device: torch.device, repeats: int, shapes=LAYER_SHAPES) -> Dict:
    """fwd+bwd and forward seconds of each candidate at each (T, E), median of interleaved
    rounds of several calls."""
    from espnet_omni.espnet_nets import PositionwiseFeedForward

    runs = []
    for index, (tokens, num_experts) in enumerate(shapes):
        torch.manual_seed(0)
        dense = PositionwiseFeedForward(D_MODEL, FFN_UNITS, 0.0).to(device)
        moe = moe_layer(D_MODEL, FFN_UNITS, num_experts, device, zero_bias=True)
        eager = moe_layer(D_MODEL, FFN_UNITS, num_experts, device, zero_bias=True)
        eager.load_state_dict(moe.state_dict())
        eager.experts.implementation = "eager"
        x = torch.randn(tokens, D_MODEL, device=device, requires_grad=True)
        grad = torch.randn(tokens, D_MODEL, device=device)

        def train_step(module, batch_axis=False):
            return training_call(module, x, grad, device, batch_axis)

        def forward(module, batch_axis=False):
            return inference_call(module, x.detach(), device, batch_axis)

        train = {"dense": train_step(dense), "ours": train_step(moe, True),
                 "ours_eager": train_step(eager, True),
                 "floor": grouped_gemms_alone(moe, x, grad, cast=False),
                 "floor+cast": grouped_gemms_alone(moe, x, grad, cast=True)}
        if index == 0:
            hf = hf_switch_mlp(moe, tokens)
            if hf is not None:
                train["hf_switch"] = train_step(hf, True)
        calls = 5
        fwdbwd = interleaved_times(train, device, repeats, calls=calls, warmup=2)
        for module in (dense, moe):
            module.eval()
        infer = {"dense": forward(dense), "ours": forward(moe, True),
                 "floor+cast": grouped_gemms_alone(moe, x, grad, cast=True, backward=False)}
        fwd = interleaved_times(infer, device, repeats, calls=calls, warmup=2)
        host = {name: host_seconds(train[name], device) for name in ("dense", "ours")}
        run = {"T": tokens, "E": num_experts,
               "implementation": default_implementation(moe, x, device),
               "fwdbwd_s": medians(fwdbwd), "fwd_s": medians(fwd), "host_fwdbwd_s": host,
               "fwdbwd_rounds_s": fwdbwd, "fwd_rounds_s": fwd}
        runs.append(run)
        print(f"layer T={tokens} E={num_experts}: fwd+bwd / dense "
              + ", ".join(f"{k} {v / run['fwdbwd_s']['dense']:.2f}"
                          for k, v in run["fwdbwd_s"].items()), flush=True)
        del dense, moe, eager, train, infer
        torch.cuda.empty_cache()
    return {"d": D_MODEL, "f": FFN_UNITS, "runs": runs}


def default_implementation(layer, x: torch.Tensor, device: torch.device) -> str:
    """The implementation the layer's experts take by default in training under autocast."""
    layer.train()
    with torch.enable_grad(), autocast_for(device):
        return layer.experts.implementation_for(x)[0]


def build_step_encoder(kind: str, device: torch.device):
    """One of the compared encoders at STEP_SIZE, with its CTC head."""
    from espnet2.asr.ctc import CTC

    from espnet_omni.encoder import DenseTransformerEncoder, OmniRouterEncoder, SwitchEncoder

    size = STEP_SIZE
    options = dict(output_size=size["d"], attention_heads=size["heads"],
                   linear_units=size["f"], num_blocks=size["blocks"], input_layer="stack",
                   stack_frames=size["stack"], use_sdpa=True, attention_dropout_rate=0.1)
    if kind == "dense_transformer":
        encoder = DenseTransformerEncoder(size["idim"], **options)
    else:
        cls = OmniRouterEncoder if kind == "omni_router" else SwitchEncoder
        encoder = cls(size["idim"], num_experts=size["experts"], **options)
    return encoder.to(device), CTC(size["vocab"], size["d"]).to(device)


def step_batch(device: torch.device):
    """48 utterances of 15 s fbank (a quarter of them 20% shorter) and their targets."""
    size = STEP_SIZE
    feats = torch.randn(size["batch"], size["frames"], size["idim"], device=device)
    lengths = torch.full((size["batch"],), size["frames"], device=device)
    lengths[::4] = int(size["frames"] * 0.8)
    target = torch.randint(1, size["vocab"], (size["batch"], size["target"]), device=device)
    target_lengths = torch.full((size["batch"],), size["target"], device=device)
    return feats, lengths, target, target_lengths


def weighted_router_losses(routing) -> torch.Tensor:
    """The router losses of ``moe_espnet`` (its default weights) from a forward's
    RouterOutputs; 0 for the dense twin."""
    from espnet_omni.moe.losses import router_losses

    if not routing:
        return torch.zeros(())
    loss_lb, loss_z = router_losses(routing)
    return 0.01 * loss_lb + 0.001 * loss_z


def bench_training_step(device: torch.device, repeats: int) -> Dict:
    """Seconds per training step, tokens (encoder frames) per second and peak memory of each
    encoder at the Libriheavy shape."""
    feats, lengths, target, target_lengths = step_batch(device)
    results: Dict = {"size": STEP_SIZE, "step_s": {}, "params": {}, "peak_gib": {},
                     "static_gib": {}, "rounds_s": {}}
    steps, states = {}, {}
    for kind in ("dense_transformer", "switch", "omni_router"):
        torch.manual_seed(0)
        encoder, ctc = build_step_encoder(kind, device)
        modules = torch.nn.ModuleList([encoder, ctc]).train()
        optimizer = torch.optim.AdamW(modules.parameters(), lr=1e-4, fused=True)
        results["params"][kind] = sum(p.numel() for p in modules.parameters())

        def step(encoder=encoder, ctc=ctc, optimizer=optimizer):
            with autocast_for(device), encoder.collect_routing() as trace:
                out, out_lengths, _ = encoder(feats, lengths)
                aux = weighted_router_losses(trace.outputs)
            loss = ctc(out.float(), out_lengths, target, target_lengths) + aux * out.size(1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        steps[kind] = step
        states[kind] = (modules, optimizer)
    for kind, step in steps.items():  # one step each: optimizer states exist from here on
        step()
    for kind, step in steps.items():
        # The three encoders live side by side: each one's peak is its own weights and
        # optimizer states plus what its step allocates above them.
        modules, optimizer = states[kind]
        static = sum(t.numel() * t.element_size() for t in _tensors_of(modules, optimizer))
        with PeakMemory(device) as peak:
            step()
        results["peak_gib"][kind] = (static + peak.peak - peak.before) / 2**30
        results["static_gib"][kind] = static / 2**30
    rounds = interleaved_times(steps, device, repeats, calls=2, warmup=1)
    results["rounds_s"] = rounds
    results["step_s"] = medians(rounds)
    frames = int(((lengths + STEP_SIZE["stack"] - 1) // STEP_SIZE["stack"]).sum())
    results["frames_per_step"] = frames
    results["tokens_per_s"] = {kind: frames / s for kind, s in results["step_s"].items()}
    print("training step: " + ", ".join(
        f"{k} {v * 1e3:.0f} ms, peak {results['peak_gib'][k]:.1f} GiB"
        for k, v in results["step_s"].items()), flush=True)
    return results


def _tensors_of(modules: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """The parameters and the optimizer's state tensors."""
    yield from modules.parameters()
    for state in optimizer.state.values():
        yield from (value for value in state.values() if torch.is_tensor(value))


def count_synchronisations(device: torch.device) -> Dict[str, int]:
    """Host synchronisations of one Omni-router training step at a small size, counted with
    ``torch.cuda.set_sync_debug_mode("warn")``: the encoder's part (forward, router losses and
    routing statistics, backward from the CTC gradient, fused AdamW step) and the whole step
    (ESPnet's CTC loss and its backward included)."""
    from espnet_omni.analysis.routing_stats import routing_health
    from espnet2.asr.ctc import CTC

    from espnet_omni.encoder import OmniRouterEncoder

    torch.manual_seed(0)
    encoder = OmniRouterEncoder(80, output_size=256, attention_heads=4, linear_units=1024,
                                num_blocks=4, num_experts=8, input_layer="stack").to(device)
    ctc = CTC(100, 256).to(device)
    modules = torch.nn.ModuleList([encoder, ctc]).train()
    optimizer = torch.optim.AdamW(modules.parameters(), lr=1e-4, fused=True)
    feats = torch.randn(4, 400, 80, device=device)
    lengths = torch.tensor([400, 350, 300, 200], device=device)
    target = torch.randint(1, 100, (4, 20), device=device)
    target_lengths = torch.full((4,), 20, device=device)

    def encoder_forward():
        with autocast_for(device), encoder.collect_routing() as trace:
            out, out_lengths, _ = encoder(feats, lengths)
            aux = weighted_router_losses(trace.outputs)
            routing_health(trace.outputs, trace.blocks)
        return out, out_lengths, aux

    def whole_step():
        out, out_lengths, aux = encoder_forward()
        (ctc(out.float(), out_lengths, target, target_lengths) + aux).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    whole_step()  # warm-up: lazy initialisations are not counted
    counts = {}
    with _counted_synchronisations() as seen:
        out, out_lengths, aux = encoder_forward()
    encoder_part = len(seen)
    grad_out = torch.autograd.grad(ctc(out.float(), out_lengths, target, target_lengths), out,
                                   retain_graph=True)[0]
    with _counted_synchronisations() as seen:
        torch.autograd.backward([out, aux], [grad_out, torch.ones_like(aux)])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    counts["encoder_step"] = encoder_part + len(seen)
    with _counted_synchronisations() as seen:
        whole_step()
    counts["whole_step_with_ctc"] = len(seen)
    print(f"host synchronisations: {counts}", flush=True)
    return counts


class _counted_synchronisations:
    """Collect the warnings of torch's sync debug mode raised inside the block."""

    def __enter__(self) -> List[str]:
        self._catch = warnings.catch_warnings(record=True)
        self.seen = self._catch.__enter__()
        warnings.simplefilter("always")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        return self.seen

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        self._catch.__exit__(*exc)
        # torch's own notice that the mode is a prototype is not a synchronisation.
        self.seen[:] = [w for w in self.seen if "synchronizing CUDA operation" in str(w.message)]


def profile_layer(device: torch.device, tokens: int = 16384, num_experts: int = 8) -> str:
    """The GPU kernels of the MoE layer's fwd+bwd at T tokens (the default implementation),
    by total device time: a table from torch's profiler."""
    torch.manual_seed(0)
    layer = moe_layer(D_MODEL, FFN_UNITS, num_experts, device)
    x = torch.randn(1, tokens, D_MODEL, device=device, requires_grad=True)
    grad = torch.randn(1, tokens, D_MODEL, device=device)

    def step():
        layer.zero_grad(set_to_none=True)
        with autocast_for(device):
            out = layer(x)[0]
        out.backward(grad.to(out.dtype))

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="device_time_total", row_limit=25, max_name_column_width=60)


def bench_gpu(device: torch.device, repeats: int) -> Dict:
    """All three parts; a part that fails is reported with its error, the others still run."""
    results: Dict = {}
    for name, part in (("layer", lambda: bench_layer(device, repeats)),
                       ("training_step", lambda: bench_training_step(device, repeats)),
                       ("synchronisations", lambda: count_synchronisations(device)),
                       ("profile", lambda: {"table": profile_layer(device)})):
        start = time.perf_counter()
        try:
            results[name] = part()
        except Exception as error:  # noqa: BLE001 - one report for the whole run
            import traceback

            results[name] = {"error": "".join(traceback.format_exception(error))[-3000:]}
            print(f"{name} failed:\n{results[name]['error']}", flush=True)
        torch.cuda.empty_cache()
        results.setdefault("part_seconds", {})[name] = time.perf_counter() - start
    return results


def markdown(results: Dict) -> str:
    """The GPU part of the benchmark report."""
    lines: List[str] = []
    layer = results.get("layer", {})
    if "error" in layer:
        lines += ["**MoE layer on the GPU** failed:", "", "```", layer["error"], "```", ""]
    elif layer:
        names = ["ours", "ours_eager", "hf_switch", "floor", "floor+cast"]
        lines += [
            f"**MoE layer on the GPU** (d {layer['d']}, expert FFN {layer['f']}, top-1 dropless, "
            "bf16 autocast): time / ESPnet's dense FFN of expert size. ours = the default "
            "implementation; eager = one GEMM pair per expert; HF = transformers' "
            "SwitchTransformersSparseMLP; floor = the two bf16 grouped GEMMs alone on rows "
            "already sorted, weights already bf16; floor+cast = the same, casting the float32 "
            "weights in each call; host = the time the host takes to issue one fwd+bwd (where "
            "it reaches the synchronised time, the host sets the pace).", "",
            "| T | E | implementation | dense fwd+bwd ms | " + " | ".join(names)
            + " | host ms dense / ours | dense fwd ms | ours fwd | floor+cast fwd |",
            "|" + " --- |" * (len(names) + 8),
        ]
        for run in layer["runs"]:
            fb, fw = run["fwdbwd_s"], run["fwd_s"]
            cells = [f"{fb[n] / fb['dense']:.2f}" if n in fb else "–" for n in names]
            lines.append(f"| {run['T']} | {run['E']} | {run['implementation']} | "
                         f"{fb['dense'] * 1e3:.3f} | " + " | ".join(cells)
                         + f" | {run['host_fwdbwd_s']['dense'] * 1e3:.2f} / "
                         f"{run['host_fwdbwd_s']['ours'] * 1e3:.2f}"
                         + f" | {fw['dense'] * 1e3:.3f} | {fw['ours'] / fw['dense']:.2f}"
                         f" | {fw['floor+cast'] / fw['dense']:.2f} |")
        lines.append("")
    step = results.get("training_step", {})
    if "error" in step:
        lines += ["**Training step** failed:", "", "```", step["error"], "```", ""]
    elif step:
        size = step["size"]
        dense = step["step_s"]["dense_transformer"]
        lines += [
            f"**Training step at the Libriheavy shape** ({size['blocks']} blocks, d "
            f"{size['d']}, FFN {size['f']}, {size['experts']} experts, {size['batch']} x "
            f"{size['frames'] // 100} s, {step['frames_per_step']} encoder frames per step, CTC "
            f"{size['vocab']}, router losses, fused AdamW, bf16 autocast):", "",
            "| encoder | parameters | ms / step | ratio to dense | frames / s | peak GiB "
            "| weights + AdamW states GiB |", "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for kind, seconds in step["step_s"].items():
            lines.append(
                f"| {kind} | {step['params'][kind] / 1e6:.1f}M | {seconds * 1e3:.1f} | "
                f"{seconds / dense:.2f}x | {step['tokens_per_s'][kind]:.0f} | "
                f"{step['peak_gib'][kind]:.2f} | {step['static_gib'][kind]:.2f} |")
        extra = step["params"]["omni_router"] - step["params"]["dense_transformer"]
        allowed = step["peak_gib"]["dense_transformer"] + 16 * extra / 2**30
        lines += ["", f"Peak memory allowed for the Omni-router (the dense twin's plus 16 bytes "
                  f"per extra parameter: weight, gradient, two AdamW states): {allowed:.2f} GiB.",
                  ""]
    syncs = results.get("synchronisations", {})
    if "error" in syncs:
        lines += ["**Host synchronisations** failed:", "", "```", syncs["error"], "```", ""]
    elif syncs:
        lines.append(f"**Host synchronisations** of one Omni-router training step: encoder "
                     f"(forward, router losses, routing statistics, backward, fused AdamW) "
                     f"{syncs['encoder_step']}; whole step with ESPnet's CTC "
                     f"{syncs['whole_step_with_ctc']}.")
    profile = results.get("profile", {})
    if profile:
        lines += ["", "**Kernels of the MoE layer's fwd+bwd** (T=16384, E=8, five calls):", "",
                  "```", profile.get("table") or profile.get("error", ""), "```"]
    return "\n".join(lines)
