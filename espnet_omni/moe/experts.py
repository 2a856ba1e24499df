"""The experts of a MoE layer: stacked weights, one place that chooses how to run them.

The E feed-forward experts hold their weights as stacked parameters, as torchtitan's
``GroupedExperts`` and MegaBlocks do: w_1 (E, d, f), b_1 (E, f), w_2 (E, f, d), b_2 (E, d),
in (in, out) order, so a row-major GEMM of rows by ``w_1[e]`` is expert e's first layer.
Nothing is stacked or transposed per call, and every implementation reads these tensors:

* ``grouped_mm`` (grouped_mm_experts.py): all experts in two grouped GEMMs, offsets on the
  device, no host synchronisation. The default on CUDA GPUs with a fused bfloat16 kernel
  (compute capability 9.0+) and for float32 CPU inference.
* ``eager`` (eager_experts.py): one GEMM pair per expert on its slice, slice lengths read on
  the host; in training without autocast with a hand-written backward. The default elsewhere
  (CPU training, other GPUs and devices, dtypes the grouped kernels lack).

Checkpoints of the earlier layout, one ``FeedForward`` module per expert
(``experts.{e}.w_1.weight`` ...), load through a state-dict hook.
"""

import math
import re
from typing import Optional, Tuple

import torch

from espnet_omni.moe import eager_experts, grouped_mm_experts
from espnet_omni.moe.dispatch import sort_by_expert
from espnet_omni.moe.feed_forward import get_activation

IMPLEMENTATIONS = ("grouped_mm", "eager")

_PER_EXPERT_KEY = re.compile(r"experts\.(\d+)\.(w_1|w_2)\.(weight|bias)$")


class Experts(torch.nn.Module):
    """E feed-forward experts w_2(dropout(act(w_1 x + b_1))) + b_2 with sort-by-expert dispatch.

    Args:
        num_experts: E.
        input_size: d_model.
        hidden_units: hidden size f of each expert.
        dropout_rate: dropout on the hidden units.
        activation_type: relu, gelu, swish/silu or tanh.
        implementation: "grouped_mm", "eager", or None to choose by device and mode (see the
            module docstring).
    """

    def __init__(
        self,
        num_experts: int,
        input_size: int,
        hidden_units: int,
        dropout_rate: float = 0.0,
        activation_type: str = "relu",
        implementation: Optional[str] = None,
    ):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if implementation not in (None, *IMPLEMENTATIONS):
            raise ValueError(
                f"experts_implementation must be one of {list(IMPLEMENTATIONS)} or null, "
                f"got '{implementation}'"
            )
        if implementation == "grouped_mm":
            if not grouped_mm_experts.has_grouped_mm():
                raise ValueError(
                    f"experts_implementation 'grouped_mm' needs torch.nn.functional.grouped_mm "
                    f"(torch >= 2.9), this is torch {torch.__version__}"
                )
            if not grouped_mm_experts.aligned(input_size, hidden_units, torch.bfloat16):
                raise ValueError(
                    f"experts_implementation 'grouped_mm' needs output_size and expert_units "
                    f"divisible by 8, got {input_size} and {hidden_units}"
                )
        self.num_experts = num_experts
        self.implementation = implementation
        self.w_1 = torch.nn.Parameter(torch.empty(num_experts, input_size, hidden_units))
        self.b_1 = torch.nn.Parameter(torch.empty(num_experts, hidden_units))
        self.w_2 = torch.nn.Parameter(torch.empty(num_experts, hidden_units, input_size))
        self.b_2 = torch.nn.Parameter(torch.empty(num_experts, input_size))
        self.dropout = torch.nn.Dropout(dropout_rate)
        self.activation = get_activation(activation_type)
        self.reset_parameters()
        self._register_load_state_dict_pre_hook(_stack_per_expert_weights)

    def reset_parameters(self) -> None:
        """torch.nn.Linear's initialisation, per expert: U(-1/sqrt(in), 1/sqrt(in))."""
        for weight, bias in ((self.w_1, self.b_1), (self.w_2, self.b_2)):
            bound = 1.0 / math.sqrt(weight.size(1))
            torch.nn.init.uniform_(weight, -bound, bound)
            torch.nn.init.uniform_(bias, -bound, bound)

    @property
    def weights(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """w_1 (E, d, f), b_1 (E, f), w_2 (E, f, d), b_2 (E, d)."""
        return self.w_1, self.b_1, self.w_2, self.b_2

    def extra_repr(self) -> str:
        experts, dim, hidden = self.w_1.shape
        return (f"num_experts={experts}, input_size={dim}, hidden_units={hidden}, "
                f"implementation={self.implementation}")

    def implementation_for(self, x: torch.Tensor) -> Tuple[str, torch.dtype]:
        """The implementation a forward on ``x`` takes, and the dtype its GEMMs run in."""
        dtype = x.dtype
        device_type = x.device.type
        if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
        if self.implementation is not None:
            return self.implementation, dtype
        dim, hidden = self.w_1.shape[1:]
        if not grouped_mm_experts.aligned(dim, hidden, dtype):
            return "eager", dtype
        if x.device.type == "cuda":
            fused = grouped_mm_experts.fused_on(x.device) and dtype == torch.bfloat16
            return ("grouped_mm" if fused else "eager"), dtype
        if x.device.type == "cpu" and grouped_mm_experts.has_grouped_mm():
            inference = not torch.is_grad_enabled() and not self.training
            return ("grouped_mm" if inference and dtype == torch.float32 else "eager"), dtype
        return "eager", dtype

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
            (N, d) sum over the k choices of gate * expert(x); x's dtype, or autocast's.
        """
        dispatch = sort_by_expert(expert_index, self.num_experts, token_mask, capacity_factor)
        implementation, dtype = self.implementation_for(x)
        if implementation == "grouped_mm":
            return grouped_mm_experts.grouped_mm_experts(
                x, dispatch, gate, self.weights, self.activation, self.dropout, dtype
            )
        return eager_experts.eager_experts(
            x, dispatch, gate, self.weights, self.activation, self.dropout
        )


def _stack_per_expert_weights(state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: turn the per-expert layout (``experts.{e}.w_1.weight`` (f, d),
    ``.w_1.bias`` (f), ``.w_2.weight`` (d, f), ``.w_2.bias`` (d)) into the stacked one."""
    found = {}
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        match = _PER_EXPERT_KEY.fullmatch(key[len(prefix):])
        if match:
            expert, layer, kind = match.groups()
            found[(layer, kind, int(expert))] = state_dict.pop(key)
    if not found:
        return
    count = 1 + max(expert for _, _, expert in found)
    wanted = [(layer, kind, e) for layer in ("w_1", "w_2") for kind in ("weight", "bias")
              for e in range(count)]
    if any(key not in found for key in wanted):
        # Incomplete: put the keys back for load_state_dict to report as unexpected.
        for layer, kind, expert in found:
            state_dict[f"{prefix}experts.{expert}.{layer}.{kind}"] = found[(layer, kind, expert)]
        return
    for layer, number in (("w_1", "1"), ("w_2", "2")):
        weights = [found[(layer, "weight", e)] for e in range(count)]
        biases = [found[(layer, "bias", e)] for e in range(count)]
        state_dict[prefix + "w_" + number] = torch.stack([w.t() for w in weights])
        state_dict[prefix + "b_" + number] = torch.stack(biases)
