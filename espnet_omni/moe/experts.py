"""Feed-forward experts and the dropless sort-by-expert dispatch.

The E experts are separate ``FeedForward`` modules (separate weight tensors). Tokens are
sorted by expert, split into one contiguous slice per expert, run through their expert and
scattered back. Compared with slicing one stacked (E, d, f) parameter in a Python loop, this
keeps backward free of full-size zero gradients per slice, and compared with a one-hot
(tokens x experts x capacity) dispatch tensor it costs O(T) instead of O(T^2).
"""

import math
from typing import List, Optional

import torch

ACTIVATIONS = {
    "relu": torch.nn.ReLU,
    "gelu": torch.nn.GELU,
    "swish": torch.nn.SiLU,
    "silu": torch.nn.SiLU,
    "tanh": torch.nn.Tanh,
}


def get_activation(name: str) -> torch.nn.Module:
    """Return a fresh activation module for ``name`` (relu, gelu, swish/silu, tanh)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"activation_type must be one of {sorted(ACTIVATIONS)}, got '{name}'"
        ) from None


class FeedForward(torch.nn.Module):
    """Position-wise feed-forward block w_2(dropout(act(w_1(x)))), as in ESPnet.

    Used for every expert and for the dense twin's FFN, so that the dense and MoE models
    differ only in routing.

    Args:
        input_size: d_model.
        hidden_units: f.
        dropout_rate: dropout on the hidden activation.
        activation_type: relu, gelu, swish/silu or tanh.
    """

    def __init__(
        self,
        input_size: int,
        hidden_units: int,
        dropout_rate: float = 0.0,
        activation_type: str = "relu",
    ):
        super().__init__()
        self.w_1 = torch.nn.Linear(input_size, hidden_units)
        self.w_2 = torch.nn.Linear(hidden_units, input_size)
        self.dropout = torch.nn.Dropout(dropout_rate)
        self.activation = get_activation(activation_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., d)."""
        return self.w_2(self.dropout(self.activation(self.w_1(x))))


def expert_capacity(num_assignments: int, num_experts: int, capacity_factor: float) -> int:
    """Slots per expert: ceil(capacity_factor * assignments / E), at least one."""
    return max(1, math.ceil(capacity_factor * num_assignments / num_experts))


class Experts(torch.nn.Module):
    """E separate feed-forward experts with sort-by-expert dispatch.

    Args:
        num_experts: E.
        input_size: d_model.
        hidden_units: hidden size f of each expert.
        dropout_rate: dropout inside each expert.
        activation_type: see ``FeedForward``.
    """

    def __init__(
        self,
        num_experts: int,
        input_size: int,
        hidden_units: int,
        dropout_rate: float = 0.0,
        activation_type: str = "relu",
    ):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        # Built one by one: repeating one module object would make all experts share weights.
        self.experts = torch.nn.ModuleList(
            FeedForward(input_size, hidden_units, dropout_rate, activation_type)
            for _ in range(num_experts)
        )

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def forward(
        self,
        x: torch.Tensor,
        expert_index: torch.Tensor,
        gate: torch.Tensor,
        token_mask: Optional[torch.Tensor] = None,
        capacity_factor: Optional[float] = None,
    ) -> torch.Tensor:
        """Run every token through its chosen experts and combine with the gates.

        Args:
            x: (N, d) tokens.
            expert_index: (N, k) chosen experts.
            gate: (N, k) combine weights (float32 from the router).
            token_mask: (N,) bool, False for padding; padded tokens are not dispatched and
                get a zero output.
            capacity_factor: None for dropless. Otherwise each expert takes at most
                ceil(cf * assignments / E) assignments, first come first served in token
                order; a dropped assignment contributes 0 (the caller's residual carries
                the token).

        Returns:
            (N, d) sum over the k choices of gate * expert(x).
        """
        num_tokens, top_k = expert_index.shape
        num_experts = self.num_experts
        flat_expert = expert_index.reshape(-1)
        if token_mask is not None:
            # Padding goes to a sentinel expert E whose slice is discarded.
            flat_expert = flat_expert.masked_fill(
                ~token_mask.repeat_interleave(top_k), num_experts
            )
        sorted_expert, order = flat_expert.sort(stable=True)
        counts = torch.bincount(flat_expert, minlength=num_experts + 1)[:num_experts]

        if capacity_factor is not None:
            num_assignments = int(counts.sum())
            capacity = expert_capacity(num_assignments, num_experts, capacity_factor)
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(order.numel(), device=x.device) - starts[
                sorted_expert.clamp(max=num_experts - 1)
            ]
            keep = (rank < capacity) & (sorted_expert < num_experts)
            order = order[keep]
            counts = counts.clamp(max=capacity)

        split_sizes: List[int] = counts.tolist()
        order = order[: sum(split_sizes)]
        token = order // top_k if top_k > 1 else order
        routed = x.index_select(0, token)
        # Every expert runs, also on an empty slice, so idle experts get zero gradients
        # (DDP then needs no find_unused_parameters).
        outputs = [
            expert(chunk)
            for expert, chunk in zip(self.experts, routed.split(split_sizes, dim=0))
        ]
        combined = torch.cat(outputs, dim=0) * gate.reshape(-1)[order].unsqueeze(-1).to(x.dtype)
        return x.new_zeros(num_tokens, x.size(-1)).index_add_(0, token, combined)
