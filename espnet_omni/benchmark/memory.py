"""The memory section: activation memory of one FFN layer, peak memory of the demo models.

* Activation memory: the bytes autograd saves for backward in one FFN layer's forward on
  T=4000 tokens, for a dense FFN, for the MoE layer as E grows (1 to 32) and for the GShard
  one-hot einsum dispatch at E=8.
* Peak memory of a training step (16 x 10 s) and of decoding one 10 s utterance per demo
  model of the recipe, one model after another, above the memory in use before each
  (CPU: the resident set's high-water mark, reset before each).
"""

from typing import Dict

import torch

from espnet_omni.benchmark.decode import DEMO_MODELS, build_demo_model
from espnet_omni.benchmark.peers import GShardEinsumMoE, moe_layer
from espnet_omni.benchmark.timing import PeakMemory, saved_activation_bytes
from espnet_omni.moe.feed_forward import FeedForward


def bench_memory(device: torch.device) -> Dict:
    """Saved activation bytes per FFN layer kind and peak MB per demo model."""
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
    for name in DEMO_MODELS:
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
