"""Total and active (per token) parameter counts of a model with MoE blocks."""

from typing import Dict

import torch

from espnet_omni.moe.layer import MoEFeedForward


def parameter_counts(model: torch.nn.Module) -> Dict[str, int]:
    """Count parameters; a shared router is counted once.

    Returns:
        dict with ``total``; ``active``: parameters one token passes through (the top-k
        experts of each MoE block, not all E); ``experts``: all expert parameters;
        ``routers``: all distinct router parameters.
    """
    total = sum(p.numel() for p in model.parameters())
    inactive = experts = 0
    routers = {}
    for module in model.modules():
        if isinstance(module, MoEFeedForward):
            num_experts = module.experts.num_experts
            per_expert = sum(p.numel() for p in module.experts.parameters()) // num_experts
            experts += per_expert * num_experts
            inactive += per_expert * (num_experts - module.router.top_k)
            routers[id(module.router)] = sum(p.numel() for p in module.router.parameters())
    return {
        "total": total,
        "active": total - inactive,
        "experts": experts,
        "routers": sum(routers.values()),
    }
