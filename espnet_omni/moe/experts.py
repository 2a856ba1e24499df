"""Feed-forward experts and their dispatch.

The E experts are separate ``FeedForward`` modules (separate weight tensors), so a checkpoint
has the same layout whatever device trained it. Three ways to run them:

* looped (the CPU default): tokens are sorted by expert, split into one contiguous slice per
  expert, run through their expert and scattered back. Compared with slicing one stacked
  (E, d, f) parameter in a Python loop, backward writes no full-size zero gradient per slice;
  compared with a one-hot (tokens x experts x capacity) dispatch tensor it costs O(T), not
  O(T^2). The split sizes are read on the host, which is free on CPU. In training without
  autocast all experts run as one autograd Function with a hand-written backward, and rows
  move to and from expert order by gathers both ways (fused_experts.py); under autocast, or
  without autograd, the FeedForward modules are called.
* stacked (float32 CPU inference, the default there): the same sorted tokens, padded with a
  column of ones, go through two float32 ``grouped_mm`` calls on all experts' weights
  stacked once in (E, in, out) order with the biases as an extra row (prepacked.py); they
  loop over the experts in C++, and the result is gathered back to token order.
* grouped (the CUDA default on GPUs with bfloat16 grouped GEMMs): the same sorted tokens go
  through two ``torch.nn.functional.grouped_mm`` calls in bfloat16 with per-expert offsets kept
  on the device, so the dispatch has no host synchronisation (no ``.tolist()``, no
  data-dependent shapes; capacity limits are applied by masking). torch runs grouped_mm as
  one fused kernel on compute capability 9.0 and 10.0; on 8.x its fallback copies the offsets
  to the host and loops over the experts.
"""

import functools
from typing import List, Optional

import torch

from espnet_omni.moe import fused_experts
from espnet_omni.moe.prepacked import (
    StackedExperts,
    can_use_prepacked,
    gather_padded_with_ones,
    grouped_mm_takes,
    plain_feed_forwards,
    prepacked_linear,
    stacked_expert_weights,
)

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
        if can_use_prepacked(self, x) and plain_feed_forwards((self,)):
            return self.prepacked_forward(x)
        if fused_experts.applies((self,), x):
            # Trained like the experts of a MoE layer: one expert on all rows.
            rows = x.reshape(-1, x.size(-1))
            return fused_experts.experts_on_sorted_rows(rows, [rows.size(0)], [self]).view_as(x)
        return self.w_2(self.dropout(self.activation(self.w_1(x))))

    def prepacked_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` for CPU inference, with the weights laid out once (see prepacked.py).

        x: (..., d) -> (..., d). The caller checks ``can_use_prepacked`` and
        ``plain_feed_forwards``; dropout is off in inference.
        """
        return prepacked_linear(self.w_2, self.inference_activation(prepacked_linear(self.w_1, x)))

    def inference_activation(self, hidden: torch.Tensor) -> torch.Tensor:
        """The activation without autograd: ReLU in place (its input is a fresh GEMM output)."""
        if isinstance(self.activation, torch.nn.ReLU):
            return hidden.relu_()
        return self.activation(hidden)


def grouped_gemm_supported(device: torch.device) -> bool:
    """Whether ``grouped_mm`` has bfloat16 kernels on ``device`` (CUDA, compute capability 8+)."""
    return device.type == "cuda" and _cuda_grouped_gemm(device.index)


@functools.lru_cache(maxsize=None)
def _cuda_grouped_gemm(index: Optional[int]) -> bool:
    return (
        hasattr(torch.nn.functional, "grouped_mm")
        and torch.cuda.get_device_capability(index)[0] >= 8
    )


class Experts(torch.nn.Module):
    """E separate feed-forward experts with sort-by-expert dispatch.

    Args:
        num_experts: E.
        input_size: d_model.
        hidden_units: hidden size f of each expert.
        dropout_rate: dropout inside each expert.
        activation_type: see ``FeedForward``.
        grouped_gemm: run the experts as bfloat16 grouped GEMMs (True), as one GEMM pair per
            expert (False), or choose by device (None: grouped on CUDA GPUs that support it,
            looped elsewhere).
    """

    def __init__(
        self,
        num_experts: int,
        input_size: int,
        hidden_units: int,
        dropout_rate: float = 0.0,
        activation_type: str = "relu",
        grouped_gemm: Optional[bool] = None,
    ):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        # bfloat16 grouped GEMM kernels need 16-byte aligned rows.
        self.aligned = input_size % 8 == 0 and hidden_units % 8 == 0
        if grouped_gemm and not self.aligned:
            raise ValueError(
                f"grouped_gemm needs output_size and expert_units divisible by 8, got "
                f"{input_size} and {hidden_units}"
            )
        # Built one by one: repeating one module object would make all experts share weights.
        self.experts = torch.nn.ModuleList(
            FeedForward(input_size, hidden_units, dropout_rate, activation_type)
            for _ in range(num_experts)
        )
        # A plain attribute, not len(self.experts): the inference path reads it per call, and
        # nn.Module's attribute lookup of the ModuleList costs more than the ops it guards.
        self.num_experts = num_experts
        self.grouped_gemm = grouped_gemm
        self.stacked_inference = grouped_mm_takes(input_size, hidden_units)

    def uses_grouped_gemm(self, x: torch.Tensor) -> bool:
        """Whether a forward on ``x`` takes the grouped path (only with plain experts, see
        ``plain_feed_forwards``)."""
        if self.grouped_gemm is None:
            wanted = self.aligned and grouped_gemm_supported(x.device)
        else:
            wanted = self.grouped_gemm
        return wanted and plain_feed_forwards(self.experts)

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
            # Padding goes to a sentinel expert E, which no expert serves.
            padding = ~token_mask if top_k == 1 else ~token_mask.repeat_interleave(top_k)
            flat_expert = flat_expert.masked_fill(padding, num_experts)
        if capacity_factor is not None:
            flat_expert = self._drop_over_capacity(flat_expert, capacity_factor)
        sorted_expert, order = flat_expert.sort(stable=True)
        if self.uses_grouped_gemm(x):
            token = order // top_k if top_k > 1 else order
            return self._grouped(x, token, sorted_expert, gate.reshape(-1).index_select(0, order))
        if self.stacked_inference and can_use_prepacked(self, x):
            stacked = stacked_expert_weights(self.experts)  # None unless plain
            if stacked is not None:
                may_leave_unserved = token_mask is not None or capacity_factor is not None
                return self._stacked_inference(
                    x, order, sorted_expert, gate, stacked, may_leave_unserved
                )
        return self._looped(x, order, sorted_expert, gate)

    def _drop_over_capacity(
        self, flat_expert: torch.Tensor, capacity_factor: float
    ) -> torch.Tensor:
        """Send each assignment beyond its expert's capacity to the sentinel expert E.

        flat_expert: (N*k,) expert per assignment, E for padding. The capacity and the ranks
        stay on the device.
        """
        num_experts = self.num_experts
        sorted_expert, order = flat_expert.sort(stable=True)
        counts = self._counts(flat_expert)
        starts = torch.cumsum(counts, 0) - counts
        real = sorted_expert < num_experts
        rank_sorted = torch.arange(order.numel(), device=order.device) - starts[
            sorted_expert.clamp(max=num_experts - 1)
        ]
        rank = torch.empty_like(rank_sorted).scatter_(0, order, rank_sorted)
        # Slots per expert: ceil(cf * assignments / E), at least one, kept on the device.
        capacity = torch.ceil(capacity_factor * real.sum().double() / num_experts).clamp(min=1)
        return flat_expert.masked_fill(rank >= capacity, num_experts)

    def _counts(self, flat_expert: torch.Tensor) -> torch.Tensor:
        """(E,) assignments per expert; the sentinel E (padding, dropped) is not counted."""
        # scatter_add, not bincount: CUDA's bincount reads the maximum back to the host.
        counts = flat_expert.new_zeros(self.num_experts + 1)
        return counts.scatter_add_(0, flat_expert, torch.ones_like(flat_expert))[:-1]

    def _looped(
        self,
        x: torch.Tensor,
        order: torch.Tensor,
        sorted_expert: torch.Tensor,
        gate: torch.Tensor,
    ) -> torch.Tensor:
        """One FeedForward call per expert on its contiguous slice of the sorted tokens, or in
        training without autocast ``_fused``.

        order: (N*k,) assignments sorted by expert (sentinel E last); sorted_expert: their
        experts; gate: (N, k) as given to ``forward``.
        """
        top_k = gate.size(-1)
        # One op for all counts: the split sizes are read on the host anyway.
        counts: List[int] = torch.bincount(sorted_expert, minlength=self.num_experts + 1).tolist()
        split_sizes, unserved = counts[:-1], counts[-1]
        if fused_experts.applies(self.experts, x):
            return self._fused(x, order, split_sizes, unserved, gate)
        if unserved:
            order = order[:-unserved]
        token = order // top_k if top_k > 1 else order
        # Every expert runs, also on an empty slice, so idle experts get zero gradients
        # (DDP then needs no find_unused_parameters).
        chunks = x.index_select(0, token).split(split_sizes, dim=0)
        combined = torch.cat([expert(chunk) for expert, chunk in zip(self.experts, chunks)], dim=0)
        if top_k == 1:
            # One assignment per token: scatter first, then gate in token order (no gather).
            # The experts' dtype (bfloat16 under autocast) for the scatter, x's for the result.
            out = combined.new_zeros(x.shape).index_add_(0, token, combined)
            return out * gate.to(x.dtype)
        return _combine_top_k(x, combined, token, order, gate)

    def _fused(
        self,
        x: torch.Tensor,
        order: torch.Tensor,
        split_sizes: List[int],
        unserved: int,
        gate: torch.Tensor,
    ) -> torch.Tensor:
        """``_looped`` with all experts in one autograd Function (see fused_experts.py).

        order: (N*k,) assignments sorted by expert, the ``unserved`` ones (padding, dropped)
        last; split_sizes: E slice lengths; gate: (N, k).
        """
        top_k = gate.size(-1)
        if top_k == 1:
            # order is a permutation of the N tokens: rows go to expert order and back with
            # gathers (the unserved rows come back as 0).
            rank = _inverse_permutation(order)
            rows = fused_experts.permute_rows(x, order, rank)
            out = fused_experts.experts_on_sorted_rows(rows, split_sizes, self.experts)
            return fused_experts.permute_rows(out, rank, order) * gate.to(x.dtype)
        if unserved:
            order = order[:-unserved]
        token = order // top_k
        out = fused_experts.experts_on_sorted_rows(
            x.index_select(0, token), split_sizes, self.experts
        )
        return _combine_top_k(x, out, token, order, gate)

    def _stacked_inference(
        self,
        x: torch.Tensor,
        order: torch.Tensor,
        sorted_expert: torch.Tensor,
        gate: torch.Tensor,
        stacked: StackedExperts,
        may_leave_unserved: bool,
    ) -> torch.Tensor:
        """All experts in two float32 ``grouped_mm`` calls on weights stacked once with the
        biases folded in (CPU inference): one C++ loop over the experts instead of a Python
        one, no separate bias add, and with top-1 the result is a gather (index_select is
        about 3x as fast as a scatter here).

        order: (N*k,) all assignments sorted by expert, unserved ones (padding, dropped) last,
        where ``grouped_mm`` leaves their rows undefined; sorted_expert: their experts (E for
        unserved); gate: (N, k) as given to ``forward``; stacked: the experts' weights from
        ``stacked_expert_weights``; may_leave_unserved: whether padding or a capacity can have
        sent assignments to the sentinel expert.

        The GEMMs stream all E experts' weights through the cache, after which each small op
        took 3-5x its warm time (E = 8, 250 rows), so this path keeps the op count low.
        """
        top_k = gate.size(-1)
        w_1, w_2, activation = stacked
        # Rows up to offsets[e] belong to experts <= e; unserved rows come after offsets[-1].
        offsets = torch.searchsorted(sorted_expert, self._expert_ends(x.device), out_int32=True)
        token = order // top_k if top_k > 1 else order
        # Made before the GEMMs, while order is still in cache.
        rank = _inverse_permutation(order) if top_k == 1 else None
        # Padded with ones: the stacked weights' bias rows then add the biases in the GEMMs.
        rows = gather_padded_with_ones(x, token, w_1)
        hidden = activation(torch.nn.functional.grouped_mm(rows, w_1, offs=offsets))
        combined = torch.nn.functional.grouped_mm(hidden, w_2, offs=offsets)
        if may_leave_unserved:
            unserved = order.numel() - int(offsets[-1])
            if unserved:
                combined[-unserved:].zero_()
        if rank is not None:
            return combined.index_select(0, rank).mul_(gate)
        return _combine_top_k(x, combined, token, order, gate)

    def _expert_ends(self, device: torch.device) -> torch.Tensor:
        """(E,) 1..E on ``device``, made once (searchsorted's boundaries of the experts' rows)."""
        ends = self.__dict__.get("_expert_ends_cache")
        if ends is None or ends.device != device:
            ends = torch.arange(1, self.num_experts + 1, device=device)
            self.__dict__["_expert_ends_cache"] = ends
        return ends

    def _grouped(
        self,
        x: torch.Tensor,
        token: torch.Tensor,
        sorted_expert: torch.Tensor,
        gate: torch.Tensor,
    ) -> torch.Tensor:
        """All experts in two bfloat16 grouped GEMMs; nothing is read back to the host.

        Assignments to the sentinel expert sit after the last offset. ``grouped_mm`` leaves
        those rows undefined, in its output and in its input gradient, so they are masked to
        zero before and after each GEMM (the mask before a GEMM zeroes them in backward).
        """
        num_experts = self.num_experts
        compute = torch.bfloat16
        offsets = torch.cumsum(self._counts(sorted_expert), 0, dtype=torch.int32)
        served = (sorted_expert < num_experts).unsqueeze(-1)
        expert_of_row = sorted_expert.clamp(max=num_experts - 1)
        first = self.experts[0]

        def grouped_linear(h: torch.Tensor, name: str) -> torch.Tensor:
            layers = [getattr(expert, name) for expert in self.experts]
            weight = torch.stack([layer.weight.to(compute) for layer in layers])  # (E, out, in)
            bias = torch.stack([layer.bias.to(compute) for layer in layers])  # (E, out)
            h = torch.where(served, h, 0.0)
            out = torch.nn.functional.grouped_mm(h, weight.transpose(1, 2), offs=offsets)
            return torch.where(served, out + bias.index_select(0, expert_of_row), 0.0)

        hidden = grouped_linear(x.index_select(0, token).to(compute), "w_1")
        out = grouped_linear(first.dropout(first.activation(hidden)), "w_2")
        combined = out.float() * torch.where(served.squeeze(-1), gate, 0.0).unsqueeze(-1)
        return x.new_zeros(x.shape).index_add_(0, token, combined.to(x.dtype))


def _inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """(N,) position of each token in the sorted rows, for a permutation ``order`` of N."""
    positions = torch.arange(order.numel(), device=order.device)
    return torch.empty_like(order).scatter_(0, order, positions)


def _combine_top_k(
    x: torch.Tensor,
    out: torch.Tensor,
    token: torch.Tensor,
    order: torch.Tensor,
    gate: torch.Tensor,
) -> torch.Tensor:
    """Sum the gated outputs of each token's k assignments.

    x: (N, d) the layer's input (shape and dtype of the result); out: (A, d) expert outputs of
    the assignments ``order`` (A of the N*k), made by tokens ``token``; gate: (N, k).
    """
    combined = out * gate.reshape(-1).index_select(0, order).unsqueeze(-1).to(x.dtype)
    return x.new_zeros(x.shape).index_add_(0, token, combined)
