"""All experts of a layer as one autograd Function, for training without autocast.

Run as modules, each expert adds its own autograd nodes to the graph (two Linear layers, their
transposes, the activation, dropout), the outputs are concatenated and the input gradients
concatenated again in backward. ``experts_on_sorted_rows`` computes every expert's forward and
backward itself, on slices of one buffer, and ``permute_rows`` moves rows to and from expert
order with a gather both ways (autograd's backward of a gather is a scatter into zeros).
Measured against the module path on a 2-core Xeon (torch 2.13, float32, one layer's fwd+bwd at
T = 4000, d = 256, f = 1024, median of 21-31 paired rounds): 0.95-0.98x the time at E = 8 and
32 with 1 and 2 threads (0.99x with a quarter of the frames padded), 0.90-0.92x with dropout
0.1; 27.6 MB saved for backward against 31.4 MB at E = 8.

The formulas are those of ``FeedForward``: w_2(dropout(activation(w_1(x)))), dropout with
``torch.nn.Dropout``'s distribution (not its random numbers). Saved for backward: the sorted
rows, the activation's input or output (whichever its derivative needs), the hidden units and
dropout's mask; for ReLU with dropout only the rows and the hidden units, which are > 0 where
both pass gradient (E = 8, dropout 0.1: 27.6 MB against 47.1 MB, and 0.95-0.96x the time of
saving all three; the dense FFN 19.5 MB against 39.1 MB, 0.91-0.95x).
"""

from typing import List, Sequence, Tuple

import torch

from espnet_omni.moe.prepacked import plain_feed_forwards


def _relu_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.threshold_backward(grad, output, 0)


# Activation module type -> (forward, backward, whether backward takes the activation's output
# (True) or its input (False)). Those that take the output run in place on the fresh GEMM output.
_ACTIVATIONS = {
    torch.nn.ReLU: (torch.relu_, _relu_backward, True),
    torch.nn.Tanh: (torch.tanh_, torch.ops.aten.tanh_backward, True),
    torch.nn.SiLU: (torch.nn.functional.silu, torch.ops.aten.silu_backward, False),
}


def _activation(module: torch.nn.Module):
    """(forward, backward, backward takes the output) for an activation module, or None."""
    if type(module) is torch.nn.GELU:
        approximate = module.approximate
        return (
            lambda x: torch.nn.functional.gelu(x, approximate=approximate),
            lambda grad, x: torch.ops.aten.gelu_backward(grad, x, approximate=approximate),
            False,
        )
    return _ACTIVATIONS.get(type(module))


def applies(experts: Sequence[torch.nn.Module], x: torch.Tensor) -> bool:
    """Whether a forward on ``x`` trains these ``FeedForward`` modules through this Function:
    autograd on, no autocast (its per-op casts need the modules), an activation whose backward
    is written here, and modules computed from their weights alone
    (``prepacked.plain_feed_forwards``)."""
    return (
        torch.is_grad_enabled()
        and not torch.is_autocast_enabled(x.device.type)
        and _activation(experts[0].activation) is not None
        and plain_feed_forwards(experts)
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
    ``inverse``; the gradient is gathered back with ``inverse``.

    x: (N, ...); index, inverse: (N,) int64.
    """
    return _PermuteRows.apply(x, index, inverse)


def _expert_slices(sizes: Sequence[int], params: Sequence[torch.Tensor]):
    """(rows of expert e, w_1, b_1, w_2, b_2) for each expert e."""
    start = 0
    for expert, size in enumerate(sizes):
        yield (slice(start, start + size), *params[4 * expert : 4 * expert + 4])
        start += size


def _empty_but_unserved(rows: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """A buffer like ``rows`` whose rows after the experts' slices are 0."""
    buffer = torch.empty_like(rows)
    buffer[sum(sizes) :].zero_()
    return buffer


class _ExpertsOnSortedRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, sizes, activation, dropout_p, *params):
        forward_fn, backward_fn, from_output = _activation(activation)
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
        for span, w_1, b_1, w_2, b_2 in _expert_slices(sizes, params):
            pre = torch.addmm(b_1, rows[span], w_1.t())
            act = forward_fn(pre)
            hidden = act
            if dropout_p > 0:
                keep = torch.empty_like(act, dtype=torch.int32).random_() >= threshold
                hidden = (act.mul_ if relu_dropout else act.mul)(keep).mul_(scale)
            torch.addmm(b_2, hidden, w_2.t(), out=out[span])
            derivative_input = hidden if relu_dropout else act if from_output else pre
            saved += [derivative_input, hidden]
            saved += [keep] if saves_mask else []
        ctx.sizes, ctx.backward_fn, ctx.dropout_p, ctx.scale = sizes, backward_fn, dropout_p, scale
        ctx.saves_mask = saves_mask
        ctx.save_for_backward(rows, *params, *saved)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        sizes, backward_fn, dropout_p = ctx.sizes, ctx.backward_fn, ctx.dropout_p
        rows, *rest = ctx.saved_tensors
        params, saved = rest[: 4 * len(sizes)], iter(rest[4 * len(sizes) :])
        grad_rows = _empty_but_unserved(rows, sizes) if ctx.needs_input_grad[0] else None
        grads: List[torch.Tensor] = []
        for span, w_1, _, w_2, _ in _expert_slices(sizes, params):
            grad, x = grad_out[span], rows[span]
            grad_hidden = grad.mm(w_2)
            act_saved, hidden = next(saved), next(saved)
            if ctx.saves_mask:  # otherwise act_saved carries dropout's mask, if any
                grad_hidden.mul_(next(saved))
            if dropout_p > 0:
                grad_hidden.mul_(ctx.scale)
            grad_pre = backward_fn(grad_hidden, act_saved)
            if grad_rows is not None:
                torch.mm(grad_pre, w_1, out=grad_rows[span])
            grads += [grad_pre.t().mm(x), grad_pre.sum(0), grad.t().mm(hidden), grad.sum(0)]
        return (grad_rows, None, None, None, *grads)


def experts_on_sorted_rows(
    rows: torch.Tensor, sizes: Sequence[int], experts: Sequence[torch.nn.Module]
) -> torch.Tensor:
    """Every expert's FFN on its contiguous slice of ``rows``, forward and backward by hand.

    Args:
        rows: (A, d) rows sorted by expert; rows after the E slices are not served.
        sizes: E slice lengths, sum <= A.
        experts: the E ``FeedForward`` modules, whose parameters are used, with the first
            one's activation and dropout (all experts of a layer share their settings).

    Returns:
        (A, d): expert e's output on slice e, 0 on the rows not served.
    """
    dropout = experts[0].dropout
    dropout_p = dropout.p if dropout.training else 0.0
    params: Tuple[torch.Tensor, ...] = tuple(
        p
        for ff in experts
        for p in (ff.w_1.weight, ff.w_1.bias, ff.w_2.weight, ff.w_2.bias)
    )
    return _ExpertsOnSortedRows.apply(rows, list(sizes), experts[0].activation, dropout_p, *params)
