"""Routing health statistics computed from RouterOutputs (padded frames excluded).

Used for the training stats (plotted by ESPnet's reporter) and by the analysis tools.
"""

import math
from typing import Dict, Sequence

import torch

from espnet_omni.moe.losses import expert_load
from espnet_omni.moe.router import RouterOutput


def router_entropy(routing: RouterOutput) -> torch.Tensor:
    """Mean entropy (nats) of the router distribution over real tokens."""
    real = routing.real_tokens()
    probs = routing.probs[real]
    entropy = -(probs * probs.clamp(min=1e-9).log()).sum(-1)
    return entropy.mean() if entropy.numel() else entropy.sum()


def decision_nmi(first: RouterOutput, second: RouterOutput) -> torch.Tensor:
    """Normalised mutual information of two layers' top-1 decisions on the same tokens.

    Permutation invariant, so it compares Switch layers (whose expert ids mean nothing
    across layers) and Omni-router layers alike: 0 = independent choices, 1 = one layer's
    choice determines the other's.
    """
    real = first.real_tokens() & second.real_tokens()
    a = first.expert_index[real, 0]
    b = second.expert_index[real, 0]
    num_experts = first.num_experts
    joint = torch.bincount(a * num_experts + b, minlength=num_experts**2).double()
    joint = joint.view(num_experts, num_experts) / joint.sum().clamp(min=1.0)
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mutual = (joint[nz] * (joint[nz] / (pa[:, None] * pb[None, :])[nz]).log()).sum()
    ha = -(pa[pa > 0] * pa[pa > 0].log()).sum()
    hb = -(pb[pb > 0] * pb[pb > 0].log()).sum()
    denom = torch.sqrt(ha * hb)
    return (mutual / denom).float() if denom > 0 else torch.zeros((), device=joint.device)


@torch.no_grad()
def routing_health(
    routing: Sequence[RouterOutput], block_numbers: Sequence[int]
) -> Dict[str, torch.Tensor]:
    """Per-MoE-block statistics for ESPnet's reporter.

    Keys (b = 1-based block number):
        route_entropy_b{b}: mean router entropy divided by log(E) (1 = uniform).
        route_max_load_b{b}: share of tokens sent to the busiest expert.
        route_unused_b{b}: number of experts that received no token.
        route_nmi: mean decision NMI of adjacent MoE blocks (when there are two or more).
    """
    stats: Dict[str, torch.Tensor] = {}
    for block, layer in zip(block_numbers, routing):
        load = expert_load(layer)
        norm = math.log(layer.num_experts) if layer.num_experts > 1 else 1.0
        stats[f"route_entropy_b{block}"] = router_entropy(layer) / norm
        stats[f"route_max_load_b{block}"] = load.max()
        stats[f"route_unused_b{block}"] = (load == 0).sum().float()
    if len(routing) > 1:
        stats["route_nmi"] = torch.stack(
            [decision_nmi(a, b) for a, b in zip(routing[:-1], routing[1:])]
        ).mean()
    return stats
