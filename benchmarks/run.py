"""Speed and memory of espnet-omni's MoE layer and encoders, measured side by side.

    .venv/bin/python benchmarks/run.py                  # everything: under 5 minutes on 2 CPU cores
    .venv/bin/python benchmarks/run.py --sections ffn   # one part (ffn, encoder, decode, memory)
    .venv/bin/python benchmarks/run.py --device cuda    # on a GPU (bf16 autocast, absolute times)
    .venv/bin/python benchmarks/run.py --device cuda --sections gpu   # the GPU report's part

Prints a markdown table and writes it with all raw figures (per-round times included) to
``benchmarks/results/<date>.{md,json}``. What each section measures is in the docstrings of
``espnet_omni.benchmark``: ``timing`` (how times and memory are measured), ``ffn``,
``encoder``, ``decode``, ``memory``, ``gpu`` (the sections; ``gpu``, on a CUDA GPU only, is
not among the default ones), ``peers`` (the implementations compared)
and ``report`` (the targets).
"""

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from espnet_omni.benchmark.decode import bench_decode  # noqa: E402
from espnet_omni.benchmark.encoder import bench_encoder  # noqa: E402
from espnet_omni.benchmark.ffn import bench_ffn  # noqa: E402
from espnet_omni.benchmark.memory import bench_memory  # noqa: E402
from espnet_omni.benchmark.report import figures, markdown, round_quartiles  # noqa: E402
from espnet_omni.benchmark.timing import cpu_model, steady_cpu_allocator  # noqa: E402

SECTIONS = ["ffn", "encoder", "decode", "memory"]
GPU_SECTIONS = ["gpu"]


def bench_gpu(device: torch.device, repeats: int) -> Dict:
    """The GPU part (``espnet_omni.benchmark.gpu``), imported only when it is asked for."""
    from espnet_omni.benchmark.gpu import bench_gpu as run_gpu_part

    return run_gpu_part(device, repeats)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=SECTIONS,
                        choices=SECTIONS + GPU_SECTIONS)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="CPU threads for the FFN section (encoder: the last)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repetitions")
    parser.add_argument("--processes", type=int, default=5,
                        help="fresh processes for the T=250 inference figures (1: this one)")
    parser.add_argument("--output_dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if "gpu" in args.sections and device.type != "cuda":
        parser.error("--sections gpu needs --device cuda")

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
        # Five rounds at the default: a step's time swings from round to round.
        "encoder": lambda: bench_encoder(device, args.threads[-1], max(3, args.repeats - 2)),
        "decode": lambda: bench_decode(device, args.repeats),
        "memory": lambda: bench_memory(device),
        "gpu": lambda: bench_gpu(device, args.repeats),
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
