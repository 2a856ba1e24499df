"""The implementations the MoE layer is compared with, and the layer as the benchmark builds it.

* ``GShardEinsumMoE``: top-1 GShard dispatch with one-hot einsums, as fairseq's Top1Gate and
  MOELayer (and DeepSpeed's sharded_moe) compute it: the reference dispatch. Its (S, E, C)
  dispatch and combine tensors make time and memory grow with S^2.
* ``hf_switch_mlp``: transformers' ``SwitchTransformersSparseMLP``, which loops over the experts
  with boolean-mask indexing, when transformers is installed.

Both run the weights of one of our layers (``moe_layer``), so their outputs can be compared
with ours on the same input.
"""

import math
from typing import Optional

import torch

from espnet_omni.moe.experts import Experts
from espnet_omni.moe.layer import MoEFeedForward
from espnet_omni.moe.router import Router


class GShardEinsumMoE(torch.nn.Module):
    """Reference: top-1 GShard dispatch with one-hot einsums, running the router and experts of
    ``layer``.

    capacity = int(cf * ceil(S / E)); tokens over capacity are dropped (output 0). Expert e
    computes ``act(x @ w_1[e] + b_1[e]) @ w_2[e] + b_2[e]`` on its (C, d) slot of the dispatched
    tensor, one expert after another as fairseq's MOELayer runs its local experts.
    """

    def __init__(self, layer: MoEFeedForward, capacity_factor: float):
        super().__init__()
        self.router = layer.router
        self.experts = layer.experts
        self.capacity_factor = capacity_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(S, d) -> (S, d)."""
        num_tokens, num_experts = x.size(0), self.experts.num_experts
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
        expert_out = torch.stack([
            self.expert(chunk, *weights)
            # unbind: one view per expert without a full-size zero gradient per slice.
            for chunk, weights in zip(dispatched, zip(*(w.unbind(0) for w in self.experts.weights)))
        ])
        return torch.einsum("sec,ecm->sm", combine_sec.to(x.dtype), expert_out)

    def expert(self, chunk, w_1, b_1, w_2, b_2) -> torch.Tensor:
        """One expert's FFN on its (C, d) rows."""
        hidden = self.experts.dropout(self.experts.activation(torch.addmm(b_1, chunk, w_1)))
        return torch.addmm(b_2, hidden, w_2)


def hf_switch_mlp(layer: MoEFeedForward, num_tokens: int) -> Optional[torch.nn.Module]:
    """transformers' SwitchTransformersSparseMLP with ``layer``'s router and expert weights, on
    the layer's device and in its dtype, capacity large enough to drop nothing; None when
    transformers is not installed.

    Its experts have no biases: the layer's must be 0 (``moe_layer(..., zero_bias=True)``).
    """
    try:
        from transformers.models.switch_transformers.configuration_switch_transformers import (
            SwitchTransformersConfig,
        )
        from transformers.models.switch_transformers.modeling_switch_transformers import (
            SwitchTransformersSparseMLP,
        )
    except ImportError:
        return None
    experts = layer.experts
    w_1, b_1, w_2, b_2 = experts.weights
    if bool(b_1.detach().any()) or bool(b_2.detach().any()):
        raise ValueError("SwitchTransformersSparseMLP has no expert biases: zero the layer's")
    num_experts, dim, hidden = w_1.shape
    config = SwitchTransformersConfig(
        d_model=dim, d_ff=hidden, num_experts=num_experts, expert_capacity=num_tokens,
        router_bias=False, router_jitter_noise=0.0, dropout_rate=0.0, dense_act_fn="relu",
        router_dtype="float32",
    )
    mlp = SwitchTransformersSparseMLP(config).to(device=w_1.device, dtype=w_1.dtype)
    with torch.no_grad():
        mlp.router.classifier.weight.copy_(layer.router.weight)
        for e in range(num_experts):
            expert = mlp.experts[f"expert_{e}"]
            expert.wi.weight.copy_(w_1[e].t())
            expert.wo.weight.copy_(w_2[e].t())
    return mlp


def moe_layer(d: int, f: int, num_experts: int, device: torch.device,
              zero_bias: bool = False) -> MoEFeedForward:
    """A top-1 dropless MoE layer (own router, E experts of d -> f -> d, ReLU) on ``device``,
    freshly initialised: its router, near uniform, spreads tokens as a trained one does.
    ``zero_bias``: the experts' biases set to 0 (as transformers' experts have none)."""
    layer = MoEFeedForward(Router(d, num_experts), Experts(num_experts, d, f)).to(device)
    if zero_bias:
        with torch.no_grad():
            layer.experts.b_1.zero_()
            layer.experts.b_2.zero_()
    return layer
