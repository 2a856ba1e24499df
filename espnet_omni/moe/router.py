"""The router: a linear map d_model -> num_experts with its own precision policy.

The router knows nothing about layers. A Switch encoder gives each MoE layer its own
``Router``; the Omni-router encoder passes ONE ``Router`` instance to every MoE layer, so its
weight receives gradient from every layer while each layer routes its own hidden state.
"""

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class RouterOutput:
    """Routing decisions for N tokens (all in float32 except the indices).

    Attributes:
        logits: (N, E) router logits.
        probs: (N, E) softmax of ``logits``.
        expert_index: (N, k) chosen experts, best first (int64).
        gate: (N, k) weights applied to the chosen experts' outputs.
        token_mask: (N,) bool, True for real (non-padded) tokens, or None if all are real.
    """

    logits: torch.Tensor
    probs: torch.Tensor
    expert_index: torch.Tensor
    gate: torch.Tensor
    token_mask: Optional[torch.Tensor] = None

    @property
    def num_experts(self) -> int:
        return self.logits.size(-1)

    def real_tokens(self) -> torch.Tensor:
        """(N,) bool, True for tokens that are not padding."""
        if self.token_mask is None:
            return torch.ones(self.logits.size(0), dtype=torch.bool, device=self.logits.device)
        return self.token_mask


class Router(torch.nn.Module):
    """Top-k softmax router computed in float32.

    Args:
        input_size: d_model.
        num_experts: E.
        top_k: experts per token (k). With k = 1 the gate is the raw softmax probability of
            the chosen expert: renormalising over one expert would make the gate 1.0 and cut
            the router off from the task loss.
        jitter_eps: multiplicative input noise U(1 - eps, 1 + eps) applied to the router's
            copy of the input in training only (Switch Transformer); the experts see the
            clean input.
        renormalize: with k > 1, rescale the k gates to sum to one (Mixtral style).
    """

    def __init__(
        self,
        input_size: int,
        num_experts: int,
        top_k: int = 1,
        jitter_eps: float = 0.0,
        renormalize: bool = False,
    ):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(
                f"top_k must be between 1 and num_experts={num_experts}, got {top_k}"
            )
        if jitter_eps < 0:
            raise ValueError(f"router_jitter must be >= 0, got {jitter_eps}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.jitter_eps = jitter_eps
        self.renormalize = renormalize
        self.weight = torch.nn.Parameter(torch.empty(num_experts, input_size))
        # Small initial logits: every expert starts with about the same probability.
        torch.nn.init.normal_(self.weight, std=input_size**-0.5 * 0.1)

    def forward(
        self, x: torch.Tensor, token_mask: Optional[torch.Tensor] = None
    ) -> RouterOutput:
        """Route tokens.

        Args:
            x: (N, d_model) tokens, any floating dtype.
            token_mask: (N,) bool, True for real tokens; carried into the output for the
                losses and statistics.

        Returns:
            RouterOutput with float32 logits/probs/gate and (N, k) expert indices.
        """
        device_type = x.device.type
        if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
            # Selective precision: autocast would run this matmul and softmax in half
            # precision, where small logit differences flip decisions and the z-loss overflows.
            with torch.autocast(device_type=device_type, enabled=False):
                return self._route(x.float(), token_mask)
        return self._route(x.float(), token_mask)

    def _route(self, h: torch.Tensor, token_mask: Optional[torch.Tensor]) -> RouterOutput:
        """``forward`` on float32 tokens h (N, d_model), outside autocast."""
        if self.training and self.jitter_eps > 0:
            h = h * torch.empty_like(h).uniform_(1.0 - self.jitter_eps, 1.0 + self.jitter_eps)
        # Computed as (E, N), the outputs being (N, E) views: on CPU a softmax over a last
        # dimension of 8 experts took 11-22x as long as over the tokens' dimension (torch 2.13).
        logits_t = torch.mm(self.weight.float(), h.t())
        probs_t = logits_t.softmax(dim=0)
        if self.top_k == 1:
            gate, expert_index = probs_t.max(dim=0, keepdim=True)  # (1, N); max is faster than topk
        else:
            gate, expert_index = probs_t.topk(self.top_k, dim=0)
        gate, expert_index = gate.t(), expert_index.t()
        if self.renormalize and self.top_k > 1:
            gate = gate / gate.sum(dim=-1, keepdim=True)
        return RouterOutput(logits_t.t(), probs_t.t(), expert_index, gate, token_mask)

    def extra_repr(self) -> str:
        return (
            f"input_size={self.weight.size(1)}, num_experts={self.num_experts}, "
            f"top_k={self.top_k}, jitter_eps={self.jitter_eps}"
        )
