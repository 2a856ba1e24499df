"""Auxiliary router losses, computed per MoE layer from its RouterOutput.

Padded frames are excluded from every average: an ASR batch is often 30%+ padding, and
counting it would reward routing all padding to one expert.
"""

from typing import Sequence, Tuple

import torch

from espnet_omni.moe.router import RouterOutput


def expert_token_counts(routing: RouterOutput) -> torch.Tensor:
    """(E,) number of real-token assignments per expert (float32, no host sync)."""
    weight = routing.real_tokens().to(routing.probs.dtype)
    top_k = routing.expert_index.size(1)
    return routing.probs.new_zeros(routing.num_experts).index_add_(
        0, routing.expert_index.reshape(-1), weight.repeat_interleave(top_k)
    )


def expert_load(routing: RouterOutput) -> torch.Tensor:
    """(E,) fraction of real-token assignments that went to each expert (sums to 1)."""
    counts = expert_token_counts(routing)
    return counts / counts.sum().clamp(min=1.0)


def mean_router_probs(routing: RouterOutput) -> torch.Tensor:
    """(E,) mean router probability of each expert over real tokens."""
    weight = routing.real_tokens().to(routing.probs.dtype)
    return (routing.probs * weight[:, None]).sum(0) / weight.sum().clamp(min=1.0)


def load_balancing_loss(routing: RouterOutput) -> torch.Tensor:
    """Switch Transformer balancing loss E * sum_e f_e * P_e (a float32 scalar).

    f_e (``expert_load``) is not differentiable; the gradient flows through P_e. The value
    is 1.0 for uniform routing and E when every token goes to one expert with probability 1.
    """
    return routing.num_experts * torch.dot(expert_load(routing), mean_router_probs(routing))


ROUTER_LOSS_REDUCTIONS = ("mean", "sum")


def router_losses(
    routing: Sequence[RouterOutput], reduction: str = "mean"
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The balancing loss and the z-loss of every MoE block, each averaged (``mean``) or added
    (``sum``, as the Switch Transformer adds one balancing loss per layer) over the blocks."""
    if reduction not in ROUTER_LOSS_REDUCTIONS:
        raise ValueError(f"reduction must be one of {ROUTER_LOSS_REDUCTIONS}, got {reduction!r}")
    loss_lb = torch.stack([load_balancing_loss(r) for r in routing])
    loss_z = torch.stack([router_z_loss(r) for r in routing])
    if reduction == "sum":
        return loss_lb.sum(), loss_z.sum()
    return loss_lb.mean(), loss_z.mean()


def router_z_loss(routing: RouterOutput) -> torch.Tensor:
    """ST-MoE z-loss: mean over real tokens of logsumexp(logits)^2 (a float32 scalar)."""
    weight = routing.real_tokens().to(routing.probs.dtype)
    z = torch.logsumexp(routing.logits, dim=-1) ** 2
    return (z * weight).sum() / weight.sum().clamp(min=1.0)

