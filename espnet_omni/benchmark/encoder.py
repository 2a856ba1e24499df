"""The encoder section: a training step of the Omni-router encoder against dense encoders.

One training step (fwd, CTC loss, bwd, Adam) of the Omni-router encoder, of its dense twin and
of ESPnet's stock ``transformer`` encoder of the same size, on 16 utterances of 10 s of fbank
(some padded), all with the 4x frame stacking of the project's configs.
"""

from typing import Dict

import torch

from espnet_omni.benchmark.timing import autocast_for, interleaved_times, medians


def build_encoder(kind: str, num_experts: int, size: Dict, device: torch.device):
    """One of the benchmarked encoders ("dense_transformer", "omni_router" or
    "espnet_transformer"), all with 4x frame stacking as in the project's configs: ours through
    ``input_layer: stack`` on the fbank frames, ESPnet's stock encoder, which has no stacking
    layer, through its ``linear`` input layer on frames stacked beforehand (``stacked_input``)."""
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
    """Seconds per training step (fwd, CTC loss, bwd, Adam) of each encoder on 16 x 10 s of
    fbank, in ``repeats`` interleaved rounds, with ``num_threads`` CPU threads."""
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
