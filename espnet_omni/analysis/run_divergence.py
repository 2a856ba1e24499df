"""How far two trainings of one model drift apart when only the arithmetic differs.

A training of a config is replayed for a few steps on fixed random batches in a fresh process
per setting: the reference (1 thread), the same again, 2 threads, ATen's AVX2 kernels
(``ATEN_CPU_CAPABILITY=avx2``), MKL's AVX2 kernels (``MKL_ENABLE_INSTRUCTIONS=AVX2``, as on a
CPU without AVX-512), and another seed (the scale of a real difference). Each is compared with
the reference: the loss at the first and last step, the distance of the final parameters
relative to how far training moved them, and for a MoE model the share of a probe batch's
frames routed to another expert in some block. Top-1 routing is a step function of the router
logits, so a last-bit difference that moves a frame across a decision boundary changes the
computation itself, not only its rounding.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

SETTINGS = {  # name -> (threads, seed, environment)
    "reference": (1, 0, {}),
    "reference again": (1, 0, {}),
    "2 threads": (2, 0, {}),
    "ATen AVX2 kernels": (1, 0, {"ATEN_CPU_CAPABILITY": "avx2"}),
    "MKL AVX2 kernels": (1, 0, {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    "seed 1": (1, 1, {}),
}


def synthetic_batches(steps: int, batch: int, seconds: float, vocab_size: int, data_seed: int = 1234):
    """``steps`` batches (speech (B, samples), lengths (B,), text (B, L), lengths (B,)) of
    noise-like audio and random token targets, the same in every process."""
    g = torch.Generator().manual_seed(data_seed)
    samples = int(seconds * 16000)
    out = []
    for _ in range(steps):
        speech = torch.randn(batch, samples, generator=g) * 0.1
        lengths = torch.randint(samples // 2, samples + 1, (batch,), generator=g)
        lengths[0] = samples
        text_lengths = torch.randint(3, 12, (batch,), generator=g)
        text = torch.randint(2, vocab_size - 1, (batch, int(text_lengths.max())), generator=g)
        for i, n in enumerate(text_lengths):
            text[i, n:] = -1
        out.append((speech, lengths, text, text_lengths))
    return out


def replay_training(config: Path, steps: int, seed: int, vocab_size: int = 150, batch: int = 8,
                    seconds: float = 3.0) -> Dict:
    """Train ``config``'s model for ``steps`` Adam steps with its learning rate (constant) and
    gradient clipping; returns the losses, the initial and final parameters (flat) and the
    expert index per MoE block of a probe batch (blocks, frames) at the end."""
    import yaml

    from espnet_omni.configs import build_model_from_config

    conf = yaml.safe_load(Path(config).read_text())
    torch.manual_seed(seed)
    model = build_model_from_config(Path(config), vocab_size, device="cpu")
    initial = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=conf.get("optim_conf", {}).get("lr", 1e-3))
    losses = []
    model.train()
    for speech, lengths, text, text_lengths in synthetic_batches(steps, batch, seconds, vocab_size):
        loss, _, _ = model(speech, lengths, text, text_lengths)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), conf.get("grad_clip", 5.0))
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    routes = None
    probe = synthetic_batches(1, batch, seconds, vocab_size, data_seed=99)[0]
    if getattr(model.encoder, "moe_blocks", None):
        with torch.no_grad(), model.encoder.collect_routing() as trace:
            model.encode(probe[0], probe[1])
        routes = torch.stack([r.expert_index[:, 0] for r in trace.outputs])
    return {"losses": losses, "initial": initial,
            "final": torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone(),
            "routes": routes}


@dataclass
class Divergence:
    setting: str
    first_loss_diff: float  # |loss - reference's| at step 1
    last_loss_diff: float  # at the last step
    param_distance: float  # ||final - reference's final|| / ||reference's final - initial||
    rerouted: Optional[float]  # share of probe frames with another expert in some block


def compare(run: Dict, reference: Dict, setting: str) -> Divergence:
    moved = float((reference["final"] - reference["initial"]).norm())
    rerouted = None
    if reference["routes"] is not None:
        rerouted = float((run["routes"] != reference["routes"]).any(0).float().mean())
    return Divergence(setting, abs(run["losses"][0] - reference["losses"][0]),
                      abs(run["losses"][-1] - reference["losses"][-1]),
                      float((run["final"] - reference["final"]).norm()) / max(moved, 1e-30), rerouted)


def run_setting(config: Path, steps: int, setting: str, output: Path) -> Path:
    """Replay ``config`` under ``setting`` (of SETTINGS) in a fresh process (the kernel
    choice is read when torch loads); the run is saved to ``output``."""
    threads, seed, env = SETTINGS[setting]
    code = ("import sys, torch; torch.set_num_threads(int(sys.argv[3])); "
            "from espnet_omni.analysis.run_divergence import replay_training; "
            "torch.save(replay_training(sys.argv[1], int(sys.argv[2]), int(sys.argv[4])), sys.argv[5])")
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **env)
    subprocess.run([sys.executable, "-c", code, str(config), str(steps), str(threads), str(seed), str(output)],
                   check=True, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return output


def measure(configs: Sequence[Path], steps: int, work_dir: Path,
            settings: Sequence[str] = tuple(SETTINGS)) -> Dict[str, List[Divergence]]:
    """Per config (by file stem), each setting's divergence from the reference."""
    work_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for config in configs:
        runs = {}
        for setting in settings:
            path = run_setting(config, steps, setting, work_dir / f"{Path(config).stem}.{setting.replace(' ', '_')}.pt")
            runs[setting] = torch.load(path, weights_only=False)
        results[Path(config).stem] = [compare(runs[s], runs["reference"], s) for s in settings if s != "reference"]
    return results


def divergence_markdown(results: Dict[str, List[Divergence]], steps: int) -> str:
    lines = [f"Each setting against the reference (1 thread, seed 0) after {steps} training steps.", "",
             "| config | setting | loss diff, step 1 | loss diff, last step | parameter distance / training's own movement | probe frames rerouted |",
             "| --- | --- | --- | --- | --- | --- |"]
    for config, rows in results.items():
        for d in rows:
            rerouted = "–" if d.rerouted is None else f"{100 * d.rerouted:.1f}%"
            lines.append(f"| {config} | {d.setting} | {d.first_loss_diff:.2g} | {d.last_loss_diff:.2g} | "
                         f"{d.param_distance:.2g} | {rerouted} |")
    return "\n".join(lines) + "\n"


def divergence_json(results: Dict[str, List[Divergence]]) -> str:
    return json.dumps({c: [d.__dict__ for d in rows] for c, rows in results.items()}, indent=1)
