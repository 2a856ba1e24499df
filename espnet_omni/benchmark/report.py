"""The benchmark's report: the targeted ratios and the markdown table.

Each target is a ratio of two candidates' medians from the same run (``figures``); beside it
the table gives the quartiles of that ratio taken round by round (``round_quartiles``), which
show how far a single round swings on a shared machine. The FFN targets are checked at every
thread count measured.
"""

import statistics
from typing import Dict, List, Tuple

# Targeted ratios: key -> (description, limit, "max" or "min").
TARGETS = {
    "ffn_fwdbwd_e8": ("MoE FFN fwd+bwd / dense, E=8, T=4000", 1.10, "max"),
    "ffn_fwdbwd_e32": ("MoE FFN fwd+bwd / dense, E=32, T=4000", 1.20, "max"),
    "ffn_infer_t250_e8": ("MoE FFN inference / ESPnet dense FFN, E=8, T=250", 1.30, "max"),
    "einsum_speedup_e8": ("one-hot einsum time / ours, fwd+bwd, E=8, T=4000", 5.0, "min"),
    "einsum_speedup_e32": ("one-hot einsum time / ours, fwd+bwd, E=32, T=4000", 5.0, "min"),
    "encoder_step": ("Omni-router training step / dense twin", 1.15, "max"),
    "decode_rtf_batch1": ("Omni-router decoding RTF / dense, batch 1", 1.30, "max"),
    "decode_rtf_batch16": ("Omni-router decoding RTF / dense, batch 16 (the recipe's)", 1.30, "max"),
    "routing_analysis": ("Omni-router routing analysis / its greedy CTC decoding, batch 16", 1.30, "max"),
    "activation_growth": ("MoE activation memory E=32 / E=1", 1.05, "max"),
}


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
        if "analysis_rounds_s" in results["decode"]:
            seconds = results["decode"]["analysis_rounds_s"]
            out["routing_analysis"] = (seconds["analysis"], seconds["decode"])
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
    """The report of a run's ``results`` (as ``benchmarks/run.py`` collects them) in markdown:
    one table or line per section measured, then the targets."""
    lines = [f"Machine: {results['machine']}; torch {results['torch']}; device {results['device']}; "
             f"run {results['seconds']:.0f} s.", ""]
    if "ffn" in results:
        ffn = results["ffn"]
        lines += [
            f"**MoE FFN** (d={ffn['d']}, expert f={ffn['f']}, top-1, dropless; T={ffn['T']} "
            f"tokens unless stated), ms, median of interleaved runs. dense = ESPnet's "
            f"PositionwiseFeedForward of expert size; dense* = espnet-omni's FeedForward, which "
            f"runs float32 CPU inference on its weights transposed once; experts = the expert "
            f"FFNs alone (their training Function) on tokens already sorted, fwd+bwd; GEMMs = the "
            f"experts' two float32 grouped GEMMs alone (no biases) on tokens already sorted "
            f"(T=250); read = one pass over the experts' weights and biases (a sum; T=250 rows "
            f"need every expert's); einsum = GShard "
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
                f" | {fw['dense_transposed'] * 1e3:.1f} | {fw['ours'] * 1e3:.1f}"
                f" | {fw['ours'] / fw['dense']:.2f}x | {sm['dense'] * 1e3:.2f}"
                f" | {sm['dense_transposed'] * 1e3:.2f} | {sm['ours'] * 1e3:.2f}"
                f" | {sm['ours'] / sm['dense']:.2f}x | {sm['ours'] / sm['dense_transposed']:.2f}x"
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
                      "(ESPnet's `--quantize_asr_model true`; the experts' stacked weights are "
                      "no Linear layers, so the MoE stack has none): " + "; ".join(per_thread)]
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
    if "gpu" in results:
        from espnet_omni.benchmark import gpu

        lines += ([""] if lines[-1] else []) + [gpu.markdown(results["gpu"]).rstrip()]
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
