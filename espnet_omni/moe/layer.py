"""MoEFeedForward: a router (its own or one shared across layers) plus experts."""

from typing import Optional, Tuple

import torch

from espnet_omni.moe.experts import Experts
from espnet_omni.moe.router import Router, RouterOutput


class MoEFeedForward(torch.nn.Module):
    """Sparse mixture-of-experts replacement of the position-wise FFN.

    Args:
        router: the Router to use. Passing the same instance to several layers shares it
            (Omni-router); a fresh one per layer gives the Switch Transformer.
        experts: this layer's experts.
        capacity_factor: training capacity factor, None for dropless.
        eval_capacity_factor: capacity factor in eval mode, None for dropless.
    """

    def __init__(
        self,
        router: Router,
        experts: Experts,
        capacity_factor: Optional[float] = None,
        eval_capacity_factor: Optional[float] = None,
    ):
        super().__init__()
        if router.num_experts != experts.num_experts:
            raise ValueError(
                f"router has {router.num_experts} experts but the layer has {experts.num_experts}"
            )
        for name, value in (
            ("capacity_factor", capacity_factor),
            ("eval_capacity_factor", eval_capacity_factor),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or null (dropless), got {value}")
        self.router = router
        self.experts = experts
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor

    def forward(
        self, x: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, RouterOutput]:
        """Route and run the experts.

        Args:
            x: (B, T, d) hidden states.
            mask: (B, T) bool, True for real frames, or None.

        Returns:
            (B, T, d) output (0 at padded frames and dropped tokens) and the RouterOutput of
            the B*T tokens (flattened in batch-major order).
        """
        batch, length, dim = x.shape
        tokens = x.reshape(batch * length, dim)
        token_mask = None if mask is None else mask.reshape(batch * length)
        routing = self.router(tokens, token_mask)
        capacity = self.capacity_factor if self.training else self.eval_capacity_factor
        out = self.experts(tokens, routing.expert_index, routing.gate, token_mask, capacity)
        return out.view(batch, length, dim), routing
