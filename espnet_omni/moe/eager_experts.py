"""The eager expert implementation: one GEMM pair per expert on its slice of the sorted rows.

The slice lengths are read back to the host (free on a CPU, a synchronisation on a GPU). It is
the CPU training default and the fallback wherever the grouped GEMMs do not apply.

In training without autocast, all experts run as one autograd Function with a hand-written
backward (``experts_on_sorted_rows``): run as separate modules, each expert would add its own
autograd nodes (two GEMMs, their transposes, the activation, dropout), and the outputs and the
input gradients would be concatenated again. Elsewhere (autocast, an activation without a
backward written here) every expert's GEMMs run through autograd on views of the stacked
weights taken by one ``unbind`` (slicing a stacked Parameter per expert would make backward
write a full-size zero gradient per slice).

Weights are in the stacked layout of ``Experts``: w_1 (E, d, f), b_1 (E, f), w_2 (E, f, d),
b_2 (E, d); the dense ``FeedForward`` passes its Linear layers as E = 1 views.
"""

from typing import List, Sequence

import torch

from espnet_omni.moe.dispatch import Dispatch


def _relu_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.threshold_backward(grad, output, 0)


# Activation module type -> (forward, backward, whether backward takes the activation's output
# (True) or its input (False)). Those that take the output run in place on the fresh GEMM output.
_ACTIVATIONS = {
    torch.nn.ReLU: (torch.relu_, _relu_backward, True),
    torch.nn.Tanh: (torch.tanh_, torch.ops.aten.tanh_backward, True),
    torch.nn.SiLU: (torch.nn.functional.silu, torch.ops.aten.silu_backward, False),
}


def activation_functions(module: torch.nn.Module):
    """(forward, backward, backward takes the output) for an activation module, or None."""
    if type(module) is torch.nn.GELU:
        approximate = module.approximate
        return (
            lambda x: torch.nn.functional.gelu(x, approximate=approximate),
            lambda grad, x: torch.ops.aten.gelu_backward(grad, x, approximate=approximate),
            False,
        )
    return _ACTIVATIONS.get(type(module))


def has_hand_written_backward(activation: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether a forward on ``x`` trains through ``experts_on_sorted_rows``: autograd on, no
    autocast (its per-op casts need autograd's ops), an activation whose backward is here."""
    device_type = x.device.type
    autocast = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(
        device_type
    )
    return (
        torch.is_grad_enabled()
        and not autocast
        and activation_functions(activation) is not None
    )


class _PermuteRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor):
        ctx.save_for_backward(inverse)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def permute_rows(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for a permutation ``index`` of x's N rows, whose inverse permutation is
    ``inverse``; the gradient is gathered back with ``inverse`` (no scatter).

    x: (N, ...); index, inverse: (N,) int64.
    """
    return _PermuteRows.apply(x, index, inverse)


def _expert_slices(sizes: Sequence[int]):
    """(expert, rows of expert e) for each expert e."""
    start = 0
    for expert, size in enumerate(sizes):
        yield expert, slice(start, start + size)
        start += size


def _empty_but_unserved(rows: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """A buffer like ``rows`` whose rows after the experts' slices are 0."""
    buffer = torch.empty_like(rows)
    buffer[sum(sizes) :].zero_()
    return buffer


class _ExpertsOnSortedRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, sizes, activation, dropout_p, w_1, b_1, w_2, b_2):
        forward_fn, backward_fn, from_output = activation_functions(activation)
        # As torch.nn.Dropout: kept units scaled by 1 / (1 - p), p = 1 drops everything. The
        # mask compares random int32s, uniform on [0, 2^31), with p * 2^31: torch draws them in
        # about half the time of bernoulli_, and faster than uniform floats.
        scale = 1.0 / (1.0 - dropout_p) if dropout_p < 1 else 0.0
        threshold = round(dropout_p * 2**31)
        out = _empty_but_unserved(rows, sizes)
        saved: List[torch.Tensor] = []
        # ReLU with dropout: the dropped-out hidden units are > 0 exactly where both pass
        # gradient, so they stand in for the ReLU's output and dropout's mask, which are not
        # saved, and dropout runs in place on the ReLU's output.
        relu_dropout = forward_fn is torch.relu_ and dropout_p > 0
        saves_mask = dropout_p > 0 and not relu_dropout
        for expert, span in _expert_slices(sizes):
            pre = torch.addmm(b_1[expert], rows[span], w_1[expert])
            act = forward_fn(pre)
            hidden = act
            if dropout_p > 0:
                keep = torch.empty_like(act, dtype=torch.int32).random_() >= threshold
                hidden = (act.mul_ if relu_dropout else act.mul)(keep).mul_(scale)
            torch.addmm(b_2[expert], hidden, w_2[expert], out=out[span])
            derivative_input = hidden if relu_dropout else act if from_output else pre
            saved += [derivative_input, hidden]
            saved += [keep] if saves_mask else []
        ctx.sizes, ctx.backward_fn, ctx.dropout_p, ctx.scale = sizes, backward_fn, dropout_p, scale
        ctx.saves_mask = saves_mask
        ctx.save_for_backward(rows, w_1, w_2, *saved)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        sizes, backward_fn, dropout_p = ctx.sizes, ctx.backward_fn, ctx.dropout_p
        rows, w_1, w_2, *rest = ctx.saved_tensors
        saved = iter(rest)
        grad_rows = _empty_but_unserved(rows, sizes) if ctx.needs_input_grad[0] else None
        # Written expert by expert (an expert without rows gets zeros from its empty GEMMs),
        # in the weights' own layout.
        grad_w_1, grad_w_2 = torch.empty_like(w_1), torch.empty_like(w_2)
        grad_b_1 = w_1.new_empty(w_1.size(0), w_1.size(2))
        grad_b_2 = w_2.new_empty(w_2.size(0), w_2.size(2))
        for expert, span in _expert_slices(sizes):
            grad, x = grad_out[span], rows[span]
            grad_hidden = grad.mm(w_2[expert].t())
            act_saved, hidden = next(saved), next(saved)
            if ctx.saves_mask:  # otherwise act_saved carries dropout's mask, if any
                grad_hidden.mul_(next(saved))
            if dropout_p > 0:
                grad_hidden.mul_(ctx.scale)
            grad_pre = backward_fn(grad_hidden, act_saved)
            if grad_rows is not None:
                torch.mm(grad_pre, w_1[expert].t(), out=grad_rows[span])
            torch.mm(x.t(), grad_pre, out=grad_w_1[expert])
            torch.sum(grad_pre, 0, out=grad_b_1[expert])
            torch.mm(hidden.t(), grad, out=grad_w_2[expert])
            torch.sum(grad, 0, out=grad_b_2[expert])
        return grad_rows, None, None, None, grad_w_1, grad_b_1, grad_w_2, grad_b_2


def experts_on_sorted_rows(
    rows: torch.Tensor,
    sizes: Sequence[int],
    weights: Sequence[torch.Tensor],
    activation: torch.nn.Module,
    dropout: torch.nn.Dropout,
) -> torch.Tensor:
    """Every expert's FFN on its contiguous slice of ``rows``, forward and backward by hand.

    Args:
        rows: (A, d) rows sorted by expert; rows after the E slices are not served.
        sizes: E slice lengths, sum <= A.
        weights: w_1 (E, d, f), b_1 (E, f), w_2 (E, f, d), b_2 (E, d), any strides.
        activation, dropout: the experts' modules (the formulas are ``FeedForward``'s; dropout
            with ``torch.nn.Dropout``'s distribution, not its random numbers).

    Returns:
        (A, d): expert e's output on slice e, 0 on the rows not served.
    """
    dropout_p = dropout.p if dropout.training else 0.0
    return _ExpertsOnSortedRows.apply(rows, list(sizes), activation, dropout_p, *weights)


def _experts_through_autograd(
    rows: torch.Tensor,
    sizes: Sequence[int],
    weights: Sequence[torch.Tensor],
    activation: torch.nn.Module,
    dropout: torch.nn.Dropout,
) -> torch.Tensor:
    """``experts_on_sorted_rows`` through autograd's own ops (autocast applies to them).
    Every expert runs, also on an empty slice, so idle experts get zero gradients (DDP then
    needs no find_unused_parameters)."""
    served = sum(sizes)
    chunks = rows[:served].split(list(sizes), dim=0)
    per_expert = zip(*(weight.unbind(0) for weight in weights))
    outputs = [
        torch.addmm(b_2, dropout(activation(torch.addmm(b_1, chunk, w_1))), w_2)
        for chunk, (w_1, b_1, w_2, b_2) in zip(chunks, per_expert)
    ]
    if served < rows.size(0):
        outputs.append(outputs[0].new_zeros(rows.size(0) - served, outputs[0].size(1)))
    return torch.cat(outputs, dim=0)


def eager_experts(
    x: torch.Tensor,
    dispatch: Dispatch,
    gate: torch.Tensor,
    weights: Sequence[torch.Tensor],
    activation: torch.nn.Module,
    dropout: torch.nn.Dropout,
) -> torch.Tensor:
    """Run the experts one GEMM pair each and combine their outputs with the gates.

    Args:
        x: (N, d) tokens.
        dispatch: the assignments sorted by expert (``sort_by_expert``).
        gate: (N, k) combine weights.
        weights: the stacked w_1, b_1, w_2, b_2 (see ``experts_on_sorted_rows``).
        activation, dropout: the experts' modules.

    Returns:
        (N, d) in x's dtype: sum over the k choices of gate * expert(x), 0 for unserved ones.
    """
    num_tokens, top_k = gate.shape
    # One read of the counts: the split sizes are needed on the host.
    sizes: List[int] = torch.diff(dispatch.offsets, prepend=dispatch.offsets.new_zeros(1)).tolist()
    if top_k == 1:
        # Rows go to expert order and back with gathers both ways (unserved rows come back 0).
        rows = permute_rows(x, dispatch.order, dispatch.rank)
    else:
        rows = x.index_select(0, dispatch.token)
    if has_hand_written_backward(activation, x):
        out = experts_on_sorted_rows(rows, sizes, weights, activation, dropout)
    else:
        out = _experts_through_autograd(rows, sizes, weights, activation, dropout)
    by_assignment = permute_rows(out, dispatch.rank, dispatch.order).to(x.dtype)
    if top_k == 1:
        return by_assignment * gate.to(x.dtype)
    return (by_assignment.view(num_tokens, top_k, -1) * gate.unsqueeze(-1).to(x.dtype)).sum(1)
