"""Sorting routing decisions by expert: the permutation, its inverse and the group offsets.

Every expert implementation runs the experts on rows sorted by expert, one contiguous group per
expert. ``sort_by_expert`` computes that order on the device, without reading anything back to
the host: assignments that no expert serves (padded frames, assignments over an expert's
capacity) are given a sentinel expert E, which sorts after every real one, so they end up
after the last group, where the group offsets leave them out of every GEMM.
"""

import functools
from typing import NamedTuple, Optional

import torch


class Dispatch(NamedTuple):
    """A layer's N tokens x k assignments sorted by expert (A = N * k assignments).

    Attributes:
        order: (A,) the flat assignment (token * k + choice) at each sorted row; the rows of
            expert e are contiguous, unserved assignments come last.
        token: (A,) the token of each sorted row (``order // k``).
        rank: (A,) the sorted row of each flat assignment (the inverse of ``order``).
        offsets: (E,) int32, the end row of each expert's group; rows from ``offsets[-1]`` on
            are unserved.
        served: (A,) bool per flat assignment, True where an expert serves it; None when all
            are (no padding mask and no capacity limit).
        expert: (A,) the expert of each flat assignment, E for unserved ones.
    """

    order: torch.Tensor
    token: torch.Tensor
    rank: torch.Tensor
    offsets: torch.Tensor
    served: Optional[torch.Tensor]
    expert: torch.Tensor


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """(A,) the position of each element in ``order``, for a permutation ``order`` of A."""
    positions = torch.arange(order.numel(), device=order.device)
    return torch.empty_like(order).scatter_(0, order, positions)


def _sort_keys(flat_expert: torch.Tensor, num_experts: int) -> torch.Tensor:
    """The experts as the narrowest integer type that holds E: a radix sort then makes fewer
    passes (CUDA sorts 16-bit keys in two, 64-bit ones in eight)."""
    return flat_expert.to(torch.int16) if num_experts < 2**15 else flat_expert


@functools.lru_cache(maxsize=None)
def _group_ends(num_experts: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(E,) 1..E, made once per device (``searchsorted``'s boundaries of the experts' rows)."""
    return torch.arange(1, num_experts + 1, dtype=dtype, device=device)


def expert_counts(flat_expert: torch.Tensor, num_experts: int) -> torch.Tensor:
    """(E,) assignments per expert of ``flat_expert`` (A,); the sentinel E is not counted."""
    # scatter_add, not bincount: CUDA's bincount reads the maximum back to the host.
    counts = flat_expert.new_zeros(num_experts + 1)
    return counts.scatter_add_(0, flat_expert, torch.ones_like(flat_expert))[:-1]


def drop_over_capacity(
    flat_expert: torch.Tensor, num_experts: int, capacity_factor: float
) -> torch.Tensor:
    """Send each assignment beyond its expert's capacity to the sentinel expert E.

    Each expert takes at most ceil(capacity_factor * real assignments / E) assignments (at least
    one), first come first served in token order. flat_expert: (A,) expert per assignment, E
    for padding. The capacity and the ranks stay on the device.
    """
    sorted_keys, order = _sort_keys(flat_expert, num_experts).sort(stable=True)
    counts = expert_counts(flat_expert, num_experts)
    starts = torch.cumsum(counts, 0) - counts
    rank_sorted = torch.arange(order.numel(), device=order.device) - starts[
        sorted_keys.long().clamp_(max=num_experts - 1)
    ]
    rank_in_expert = torch.empty_like(rank_sorted).scatter_(0, order, rank_sorted)
    real = (flat_expert < num_experts).sum()
    capacity = torch.ceil(capacity_factor * real.double() / num_experts).clamp(min=1)
    return flat_expert.masked_fill(rank_in_expert >= capacity, num_experts)


def sort_by_expert(
    expert_index: torch.Tensor,
    num_experts: int,
    token_mask: Optional[torch.Tensor] = None,
    capacity_factor: Optional[float] = None,
) -> Dispatch:
    """Sort a layer's assignments by expert, on the device.

    Args:
        expert_index: (N, k) chosen experts.
        num_experts: E.
        token_mask: (N,) bool, False for padding, whose assignments are not served.
        capacity_factor: None for dropless; otherwise see ``drop_over_capacity``.
    """
    num_tokens, top_k = expert_index.shape
    flat_expert = expert_index.reshape(-1)
    if token_mask is not None:
        padding = ~token_mask if top_k == 1 else ~token_mask.repeat_interleave(top_k)
        flat_expert = flat_expert.masked_fill(padding, num_experts)
    if capacity_factor is not None:
        flat_expert = drop_over_capacity(flat_expert, num_experts, capacity_factor)
    sorted_keys, order = _sort_keys(flat_expert, num_experts).sort(stable=True)
    # The end of expert e's rows: how many keys are below e + 1.
    offsets = torch.searchsorted(
        sorted_keys, _group_ends(num_experts, sorted_keys.dtype, sorted_keys.device),
        out_int32=True,
    )
    token = order // top_k if top_k > 1 else order
    limited = token_mask is not None or capacity_factor is not None
    served = flat_expert < num_experts if limited else None
    return Dispatch(order, token, inverse_permutation(order), offsets, served, flat_expert)
