"""Routing health statistics computed from RouterOutputs (padded frames excluded).

Used for the training stats (plotted by ESPnet's reporter) and by the analysis tools. They run
on every training step, so they read nothing back to the host: padding is excluded by
weighting, not by boolean indexing, and counts come from ``index_add_``, not ``bincount``
(both of which wait for the GPU to learn a size).
"""

import math
from typing import Dict, List, Sequence

import torch

from espnet_omni.moe.losses import expert_load
from espnet_omni.moe.router import RouterOutput


def router_entropy(routing: RouterOutput) -> torch.Tensor:
    """Mean entropy (nats) of the router distribution over real tokens (0 without any)."""
    weight = routing.real_tokens().to(routing.probs.dtype)
    entropy = -torch.xlogy(routing.probs, routing.probs).sum(-1)
    return (entropy * weight).sum() / weight.sum().clamp(min=1.0)


def decision_nmi(first: RouterOutput, second: RouterOutput) -> torch.Tensor:
    """Normalised mutual information of two layers' top-1 decisions on the same tokens.

    Permutation invariant, so it compares Switch layers (whose expert ids mean nothing
    across layers) and Omni-router layers alike: 0 = independent choices, 1 = one layer's
    choice determines the other's (0 as well when either layer sends every token to one
    expert, where the information is undefined).
    """
    num_experts = first.num_experts
    weight = (first.real_tokens() & second.real_tokens()).double()
    pair = first.expert_index[:, 0] * num_experts + second.expert_index[:, 0]
    joint = weight.new_zeros(num_experts**2).index_add_(0, pair, weight)
    joint = joint.view(num_experts, num_experts) / joint.sum().clamp(min=1.0)
    pa, pb = joint.sum(1), joint.sum(0)
    ha = -torch.xlogy(pa, pa).sum()
    hb = -torch.xlogy(pb, pb).sum()
    mutual = ha + hb + torch.xlogy(joint, joint).sum()  # H(a) + H(b) - H(a, b)
    denom = torch.sqrt(ha * hb)
    return torch.where(denom > 0, mutual / denom, 0.0).float()


def routing_health_keys(block_numbers: Sequence[int], num_experts: int) -> List[str]:
    """The keys :func:`routing_health` returns when every block of ``block_numbers`` ran."""
    keys = []
    for block in block_numbers:
        keys += [f"route_{name}_b{block}" for name in ("entropy", "max_load", "unused")]
        keys += [f"route_load_b{block}_e{expert}" for expert in range(num_experts)]
    return keys + (["route_nmi"] if len(block_numbers) > 1 else [])


@torch.no_grad()
def routing_health(
    routing: Sequence[RouterOutput], block_numbers: Sequence[int]
) -> Dict[str, torch.Tensor]:
    """Per-MoE-block statistics for ESPnet's reporter.

    Keys (b = 1-based block number):
        route_entropy_b{b}: mean router entropy divided by log(E) (1 = uniform).
        route_max_load_b{b}: share of tokens sent to the busiest expert.
        route_unused_b{b}: number of experts that received no token.
        route_load_b{b}_e{e}: share of tokens sent to expert e (0-based), one plot per expert
            in ESPnet's images, where a collapse shows as one expert's share rising to 1.
        route_nmi: mean decision NMI of adjacent MoE blocks (when there are two or more).
    """
    stats: Dict[str, torch.Tensor] = {}
    for block, layer in zip(block_numbers, routing):
        load = expert_load(layer)
        norm = math.log(layer.num_experts) if layer.num_experts > 1 else 1.0
        stats[f"route_entropy_b{block}"] = router_entropy(layer) / norm
        stats[f"route_max_load_b{block}"] = load.max()
        stats[f"route_unused_b{block}"] = (load == 0).sum().float()
        for expert, share in enumerate(load.unbind()):
            stats[f"route_load_b{block}_e{expert}"] = share
    if len(routing) > 1:
        stats["route_nmi"] = torch.stack(
            [decision_nmi(a, b) for a, b in zip(routing[:-1], routing[1:])]
        ).mean()
    return stats
