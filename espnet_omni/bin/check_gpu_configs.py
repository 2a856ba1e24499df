"""Check that ESPnet ASR training configs fit a GPU's memory, before a GPU hour is spent.

    python -m espnet_omni.bin.check_gpu_configs conf/libriheavy/*.yaml --gpu_memory_gb 80

Each config's model is built as training builds it (``ASRTask.build_model``, on the CPU) and
measured (``espnet_omni.analysis.memory``): parameters (total, active per token), static
memory per GPU (float32 weights, gradients, two Adam moments), the activations saved for
backward per 1000 encoder-input frames (float32, and bfloat16 autocast as ``use_amp: true``
trains on GPUs), and the largest batch per GPU under data parallelism (every GPU holds all
experts). ``--num_experts`` checks each config at other expert counts. Memory is in GiB
(2^30 bytes); docs/scale.md explains the figures. Exits non-zero, naming the config, when one
does not build or when one utterance of ``--utterance_seconds`` does not fit; a config whose
batch (per GPU, over ``--num_gpus``) does not fit is reported on stderr.
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

GIB = 2**30


def vocabulary_size(config: Path, vocab_size: Optional[int], token_list: Optional[Path]) -> int:
    """--vocab_size, else the tokens (non-empty lines) of --token_list, else the config's
    documented ``(vocab V)``."""
    from espnet_omni.configs import documented_counts

    if vocab_size:
        return vocab_size
    if token_list is not None:
        return sum(1 for line in token_list.read_text().splitlines() if line.strip())
    documented = documented_counts(config)
    if documented:
        return documented["vocab_size"]
    raise ValueError(f"{config}: no '(vocab V)' in its header; pass --vocab_size or --token_list")


def main(cmd: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--gpu_memory_gb", type=float, default=80.0,
                        help="memory of one GPU, GiB")
    parser.add_argument("--reserve", type=float, default=0.1,
                        help="fraction of the GPU's memory held back for the CUDA context, the "
                             "allocator's fragmentation, communication and backward's buffers")
    parser.add_argument("--vocab_size", type=int, default=None,
                        help="output units; default: --token_list, else the config's '(vocab V)'")
    parser.add_argument("--token_list", type=Path, default=None,
                        help="token list (one token a line) giving the output units")
    parser.add_argument("--utterance_seconds", type=float, default=15.0,
                        help="utterance length measured, and which one utterance must fit")
    parser.add_argument("--attention", choices=("math", "fused"), default="math",
                        help="the CUDA attention kernel assumed (see espnet_omni.analysis.memory)")
    parser.add_argument("--num_gpus", type=int, default=1,
                        help="GPUs the config's batch is split over (its share per GPU is shown)")
    parser.add_argument("--num_experts", type=int, nargs="+", default=None,
                        help="check each config with these expert counts per MoE block instead")
    parser.add_argument("--max_measured_params", type=float, default=1.2e9,
                        help="larger models are not built on the CPU: their activations are "
                             "extrapolated from the expert counts measured")
    args = parser.parse_args(cmd)

    import torch

    from espnet_omni.analysis.memory import (
        config_batch_frames,
        config_memory,
        config_with_experts,
        max_batch_frames,
        static_memory,
    )
    from espnet_omni.configs import build_model_from_config

    gpu_bytes = args.gpu_memory_gb * GIB
    reserve_bytes = args.reserve * gpu_bytes
    failed, warned = [], []
    print(f"GPU {args.gpu_memory_gb:g} GiB, {args.reserve:.0%} reserved; "
          f"utterances of {args.utterance_seconds:g} s; {args.attention} attention; "
          f"memory in GiB; act = saved for backward per 1000 encoder-input frames")
    print("| config | params total | active | weights | grads | Adam | static | act fp32 "
          "| act bf16 | trains in | max frames / GPU | max audio s / GPU | config batch s / GPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = [(config, experts) for config in args.configs
            for experts in sorted(args.num_experts or [None], key=lambda e: e or 0)]
    measured = {}  # config -> its variants measured on the CPU
    extrapolated = False
    for config, experts in rows:
        name = f"{config}" if experts is None else f"{config} E={experts}"
        try:
            if not config.is_file():
                raise FileNotFoundError("no such file")
            vocab = vocabulary_size(config, args.vocab_size, args.token_list)
            base = ()
            if experts is not None and config in measured:
                with config_with_experts(config, experts) as built:
                    size = static_memory(build_model_from_config(built, vocab)).parameters
                base = measured[config] if size > args.max_measured_params else ()
            memory = config_memory(config, vocab, args.utterance_seconds, args.attention,
                                   experts, measured_from=base)
            if not memory.extrapolated:
                measured.setdefault(config, []).append(memory)
            extrapolated |= memory.extrapolated
        except Exception as error:  # any failure to build or run the model names the config
            failed.append(f"{name}: does not build or run: {type(error).__name__}: {error}")
            continue
        shift = memory.seconds_per_frame
        act = memory.training_activations
        frames = max_batch_frames(memory.static, act, gpu_bytes, reserve_bytes)
        hop = round(shift * memory.settings.sample_rate)
        batch = config_batch_frames(memory.settings, hop, args.num_gpus, act.utterance_frames)
        bf16 = memory.activations.get(torch.bfloat16)
        static = memory.static
        print(
            f"| {name}{' *' if memory.extrapolated else ''} | {memory.counts['total']:,} "
            f"| {memory.counts['active']:,} "
            f"| {static.weights / GIB:.2f} | {static.gradients / GIB:.2f} "
            f"| {static.optimizer / GIB:.2f} | {static.total / GIB:.2f} "
            f"| {memory.activations[torch.float32].per_1000_frames / GIB:.3f} "
            f"| {'–' if bf16 is None else f'{bf16.per_1000_frames / GIB:.3f}'} "
            f"| {'bf16' if memory.training_dtype == torch.bfloat16 else 'fp32'} "
            f"| {frames:,} | {frames * shift:,.0f} | {batch * shift:,.0f} |",
            flush=True,
        )
        if frames < act.utterance_frames:
            failed.append(
                f"{name}: one utterance of {args.utterance_seconds:g} s does not fit "
                f"{args.gpu_memory_gb:g} GiB ({args.reserve:.0%} reserved): static "
                f"{static.total / GIB:.2f} GiB, activations "
                f"{act.bytes_for(act.utterance_frames) / GIB:.2f} GiB; use fewer or smaller "
                f"experts, or shard the optimizer state (see docs/scale.md)"
            )
        elif batch > frames:
            warned.append(
                f"{name}: its batch per GPU ({batch * shift:,.0f} s of audio over "
                f"{args.num_gpus} GPU(s)) exceeds the {frames * shift:,.0f} s that fit"
            )
    if extrapolated:
        print("* activations extrapolated, linearly in the expert count, from the expert "
              "counts measured on the CPU (espnet_omni.analysis.memory.extrapolate_activations)")
    for line in warned:
        print(f"warning: {line}", file=sys.stderr)
    if failed:
        sys.exit("\n".join(failed))


if __name__ == "__main__":
    main()
