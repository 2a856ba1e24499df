"""The grouped-GEMM expert implementation: all experts in two ``grouped_mm`` calls.

The rows sorted by expert go through ``torch.nn.functional.grouped_mm`` on the stacked weights,
with the group offsets kept on the device: nothing is read back to the host, so a training step
on a GPU runs without synchronising. It is the default on CUDA GPUs (bfloat16, where torch has
a fused grouped kernel) and for float32 CPU inference.

How it stays at the cost of the GEMMs:

* Rows go to expert order and back with gathers through the permutation and its inverse, in
  both directions (top-1: every token has one row), never an atomic scatter.
* Rows past ``offsets[-1]`` (padding, assignments over capacity) are left out of the GEMMs by
  the offsets. ``grouped_mm`` leaves those rows undefined, and they are read in one place
  only: the gather back to token order, which zeroes them (one pass over (N, d)).
* Where the weights are copied anyway (cast to bfloat16 under autocast, as autocast casts a
  dense Linear's weight on every call), the first bias rides in that copy as extra weight
  rows, met by columns of ones in the rows, so the GEMM adds it; the gradients of the weight
  and the bias come out of one grouped GEMM. Without a copy (float32 inference) it is added
  by a gather. The second bias is added to the sorted rows by a gather of (A, d), and its
  gradient is the sum of each group's rows, one more grouped GEMM (of ones with the rows):
  small products through cuBLAS cost more host time than the GPU time they save.
* In training, one autograd Function computes the experts' forward and backward by hand and
  saves only the rows and the hidden units (with ReLU and dropout, the dropped-out hidden
  units carry both masks).
"""

import functools
from typing import Optional, Sequence

import torch

from espnet_omni.moe.dispatch import Dispatch
from espnet_omni.moe.eager_experts import activation_functions

# Columns of ones appended to the rows for the folded bias: 8 keep a bf16 row's bytes a
# multiple of 16, as the grouped kernels require.
_BIAS_COLUMNS = 8


def has_grouped_mm() -> bool:
    """Whether this torch has ``torch.nn.functional.grouped_mm``."""
    return hasattr(torch.nn.functional, "grouped_mm")


@functools.lru_cache(maxsize=None)
def _cuda_capability(index: Optional[int]) -> int:
    return torch.cuda.get_device_capability(index)[0]


def fused_on(device: torch.device) -> bool:
    """Whether ``grouped_mm`` runs as one bfloat16 kernel without host reads on ``device``:
    CUDA GPUs of compute capability 9.0 and up (Hopper, Blackwell). On 8.x torch's fallback
    copies the offsets to the host and loops over the groups."""
    return device.type == "cuda" and has_grouped_mm() and _cuda_capability(device.index) >= 9


def aligned(input_size: int, hidden_units: int, dtype: torch.dtype) -> bool:
    """Whether rows of these widths are multiples of 16 bytes in ``dtype``."""
    per_16_bytes = max(1, 16 // dtype.itemsize)
    return input_size % per_16_bytes == 0 and hidden_units % per_16_bytes == 0


def _with_bias_columns(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, d) -> (N, d + 8) in ``dtype``: x, then 8 columns of ones."""
    return torch.nn.functional.pad(x.to(dtype), (0, _BIAS_COLUMNS), value=1.0)


def _with_bias_rows(weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(E, d, f) weight and (E, f) bias -> (E, d + 8, f) in ``dtype``: the weight, then 8 rows
    of bias / 8, which the rows' 8 columns of ones sum back to the bias (exactly: a power of
    two scales without rounding)."""
    experts, dim, hidden = weight.shape
    out = weight.new_empty(experts, dim + _BIAS_COLUMNS, hidden, dtype=dtype)
    out[:, :dim] = weight
    out[:, dim:] = (bias / _BIAS_COLUMNS).unsqueeze(1)
    return out


def _sorted_experts(dispatch: Dispatch, num_experts: int) -> torch.Tensor:
    """(A,) the expert of each sorted row (unserved rows: the last expert, whose bias they get
    and no GEMM reads)."""
    return dispatch.expert.index_select(0, dispatch.order).clamp_(max=num_experts - 1)


def _first_layer(x: torch.Tensor, dispatch: Dispatch, sorted_expert: torch.Tensor,
                 w_1: torch.Tensor, b_1: torch.Tensor, dtype: torch.dtype):
    """The sorted rows and their first GEMM with its bias: (rows, w_1 as multiplied, pre)."""
    grouped_mm = torch.nn.functional.grouped_mm
    if w_1.dtype != dtype:  # the weight is copied anyway: the bias rides along
        rows = _with_bias_columns(x, dtype).index_select(0, dispatch.token)
        weight = _with_bias_rows(w_1, b_1, dtype)
        return rows, weight, grouped_mm(rows, weight, offs=dispatch.offsets)
    rows = x.to(dtype).index_select(0, dispatch.token)
    bias = b_1.to(dtype).index_select(0, sorted_expert)
    return rows, w_1, grouped_mm(rows, w_1, offs=dispatch.offsets).add_(bias)


def _second_layer(hidden: torch.Tensor, dispatch: Dispatch, sorted_expert: torch.Tensor,
                  w_2: torch.Tensor, b_2: torch.Tensor, dtype: torch.dtype):
    """The second GEMM with its bias, added per sorted row: (w_2 as multiplied, out)."""
    weight = w_2.to(dtype)
    out = torch.nn.functional.grouped_mm(hidden, weight, offs=dispatch.offsets)
    return weight, out.add_(b_2.to(dtype).index_select(0, sorted_expert))


class _GroupedExpertsFFN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dispatch, top_k, activation, dropout_p, dtype, w_1, b_1, w_2, b_2):
        forward_fn, backward_fn, from_output = activation_functions(activation)
        sorted_expert = _sorted_experts(dispatch, w_1.size(0))
        rows, weight_1, pre = _first_layer(x, dispatch, sorted_expert, w_1, b_1, dtype)
        act = forward_fn(pre)
        hidden, keep = act, None
        if dropout_p > 0:
            hidden, keep = torch.native_dropout(act, dropout_p, True)
        weight_2, out = _second_layer(hidden, dispatch, sorted_expert, w_2, b_2, dtype)
        # ReLU with dropout: the hidden units are > 0 exactly where both pass gradient.
        relu_dropout = forward_fn is torch.relu_ and keep is not None
        derivative_input = hidden if relu_dropout else act if from_output else pre
        mask = keep if keep is not None and not relu_dropout else None
        ctx.backward_fn, ctx.dropout_p, ctx.top_k = backward_fn, dropout_p, top_k
        ctx.folded = weight_1.size(1) != w_1.size(1)
        ctx.num_tokens, ctx.x_dtype = x.size(0), x.dtype
        ctx.dispatch = dispatch
        ctx.save_for_backward(rows, weight_1, weight_2, derivative_input, hidden, mask)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        grouped_mm = torch.nn.functional.grouped_mm
        rows, weight_1, weight_2, derivative_input, hidden, mask = ctx.saved_tensors
        dispatch = ctx.dispatch
        offsets = dispatch.offsets
        grad_out = grad_out.to(hidden.dtype)
        grad_hidden = grouped_mm(grad_out, weight_2.transpose(1, 2), offs=offsets)
        grad_w_2 = grouped_mm(hidden.t(), grad_out, offs=offsets)
        if mask is not None:
            grad_hidden.mul_(mask)
        if ctx.dropout_p > 0:
            grad_hidden.mul_(1.0 / (1.0 - ctx.dropout_p))
        grad_pre = ctx.backward_fn(grad_hidden, derivative_input)
        dim = weight_2.size(2)
        grad_rows = grouped_mm(grad_pre, weight_1[:, :dim].transpose(1, 2), offs=offsets)
        grad_weight_1 = grouped_mm(rows.t(), grad_pre, offs=offsets)
        if ctx.folded:  # every bias row's gradient is the bias's (see _with_bias_rows)
            grad_w_1, grad_b_1 = grad_weight_1[:, :dim], grad_weight_1[:, dim]
        else:
            grad_w_1 = grad_weight_1
            grad_b_1 = _sum_per_group(grad_pre, offsets)
        grad_b_2 = _sum_per_group(grad_out, offsets)
        grad_x = _unsort_rows(grad_rows, dispatch)
        if ctx.top_k > 1:
            grad_x = grad_x.view(ctx.num_tokens, ctx.top_k, -1).sum(1)
        return (grad_x.to(ctx.x_dtype), None, None, None, None, None,
                grad_w_1, grad_b_1, grad_w_2, grad_b_2)


def _sum_per_group(rows: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(A, f) rows -> (E, f): the sum of each expert's group of rows, as one grouped GEMM of
    a column of ones (8 wide, for alignment) with the rows."""
    ones = rows.new_ones(rows.size(0), _BIAS_COLUMNS).t()  # column-major, as x.t() in backward
    return torch.nn.functional.grouped_mm(ones, rows, offs=offsets)[:, 0]


def _unsort_rows(rows: torch.Tensor, dispatch: Dispatch) -> torch.Tensor:
    """(A, d) rows in expert order -> (A, d) in assignment order, 0 where unserved (rows past
    the offsets are undefined: zeroed, not multiplied)."""
    out = rows.index_select(0, dispatch.rank)
    if dispatch.served is not None:
        out.masked_fill_(~dispatch.served.unsqueeze(1), 0.0)
    return out


class _UnsortRows(torch.autograd.Function):
    """``_unsort_rows`` whose backward gathers the gradient with the permutation itself."""

    @staticmethod
    def forward(ctx, rows, dispatch):
        ctx.order = dispatch.order
        return _unsort_rows(rows, dispatch)

    @staticmethod
    def backward(ctx, grad):
        # The rows past the offsets get whatever their assignment's gradient is: no GEMM reads
        # them.
        return grad.index_select(0, ctx.order), None


def grouped_mm_experts(
    x: torch.Tensor,
    dispatch: Dispatch,
    gate: torch.Tensor,
    weights: Sequence[torch.Tensor],
    activation: torch.nn.Module,
    dropout: torch.nn.Dropout,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Run the experts as two grouped GEMMs and combine their outputs with the gates.

    Args:
        x: (N, d) tokens.
        dispatch: the assignments sorted by expert (``sort_by_expert``).
        gate: (N, k) combine weights.
        weights: w_1 (E, d, f), b_1 (E, f), w_2 (E, f, d), b_2 (E, d).
        activation, dropout: the experts' modules.
        dtype: the GEMMs' dtype (bfloat16 under CUDA autocast).

    Returns:
        (N, d): sum over the k choices of gate * expert(x), 0 for unserved ones; in ``dtype``.
    """
    w_1, b_1, w_2, b_2 = weights
    num_tokens, top_k = gate.shape
    dropout_p = dropout.p if dropout.training else 0.0
    if torch.is_grad_enabled():
        out = _GroupedExpertsFFN.apply(
            x, dispatch, top_k, activation, dropout_p, dtype, w_1, b_1, w_2, b_2
        )
        by_assignment = _UnsortRows.apply(out, dispatch)
    else:
        forward_fn = activation_functions(activation)[0]
        sorted_expert = _sorted_experts(dispatch, w_1.size(0))
        _, _, pre = _first_layer(x, dispatch, sorted_expert, w_1, b_1, dtype)
        hidden = forward_fn(pre)
        if dropout_p > 0:
            hidden = torch.nn.functional.dropout(hidden, dropout_p, True, inplace=True)
        _, out = _second_layer(hidden, dispatch, sorted_expert, w_2, b_2, dtype)
        by_assignment = _unsort_rows(out, dispatch)
    gate = gate.to(dtype)
    if top_k == 1:
        return by_assignment * gate
    return (by_assignment.view(num_tokens, top_k, -1) * gate.unsqueeze(-1)).sum(1)
