"""The decode section: real-time factor of greedy CTC decoding with the recipe's demo models.

The demo models of the recipe (``egs2/omni_asr/asr1/conf``: dense transformer, Switch,
Omni-router; untrained weights) run frontend + encoder + greedy CTC on 16 utterances of 4-10 s,
one at a time (as ESPnet's ``asr_inference``) and as one padded batch of 16 (as the recipe's
``asr_inference_ctc``), with one thread. Beside the batch of 16, the Omni-router's routing
analysis (``analyze_routing``: the same forward with the routing collected, counted into
:class:`~espnet_omni.analysis.routing_counts.RoutingCounts`) against its plain decoding.
"""

from pathlib import Path
from typing import Dict

import torch

from espnet_omni.benchmark.timing import interleaved_times, medians

DEMO_CONF = Path(__file__).resolve().parents[2] / "egs2" / "omni_asr" / "asr1" / "conf"

DEMO_MODELS = ("dense_transformer", "switch", "omni_router")


def build_demo_model(name: str, device: torch.device):
    """The recipe's demo model ``name`` (untrained weights, 150 tokens, no feature
    normalisation) on ``device``, in eval mode."""
    import yaml
    from espnet2.tasks.asr import ASRTask  # espnet_omni, this package's parent, registers into it

    conf = yaml.safe_load((DEMO_CONF / f"train_asr_{name}.yaml").read_text())
    args = ASRTask.get_parser().parse_args(["--token_list", "none"])
    vars(args).update(conf)
    vars(args).update(token_list=[f"t{i}" for i in range(150)], normalize=None, input_size=None,
                      specaug=None, token_type="char")
    return ASRTask.build_model(args).to(device).eval()


def bench_decode(device: torch.device, repeats: int) -> Dict:
    """RTF of frontend + encoder + greedy CTC on 16 utterances of 4-10 s: one at a time and as
    one padded batch, ``repeats`` interleaved rounds."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rate = 16000
    durations = [4.0 + 0.4 * i for i in range(16)]
    lengths = torch.tensor([int(rate * s) for s in durations], device=device)
    batch = torch.randn(len(durations), int(lengths.max()), device=device) * 0.1
    models = {name: build_demo_model(name, device) for name in DEMO_MODELS}

    def decode(model, batch_size):
        def run():
            with torch.no_grad():
                for start in range(0, len(durations), batch_size):
                    n = lengths[start:start + batch_size]
                    speech = batch[start:start + batch_size, : int(n.max())]
                    model.ctc.argmax(model.encode(speech, n)[0])
        return run

    def analyse(model):
        from espnet_omni.analysis.routing_capture import route_batch
        from espnet_omni.analysis.routing_counts import RoutingCounts

        counts = RoutingCounts(model.encoder.moe_blocks, model.encoder.routers[0].num_experts)
        keys = [f"u{i}" for i in range(len(durations))]

        def run():
            counts.add("demo", route_batch(model, keys, batch, lengths))
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
    omni = models["omni_router"]
    analysis = interleaved_times({"decode": decode(omni, 16), "analysis": analyse(omni)}, device, repeats)
    ratio = medians(analysis)["analysis"] / medians(analysis)["decode"]
    print(f"routing analysis / greedy CTC decoding, Omni-router, batch 16: {ratio:.2f}x", flush=True)
    return {"audio_s": audio, "threads": 1, "rtf": rtf, "rounds_s": rounds,
            "analysis_rounds_s": analysis}
