"""Weights laid out once for feed-forward inference on CPU.

``torch.nn.Linear`` stores its weight as (out, in) and computes ``x @ weight.T``: the BLAS
then repacks the transposed weight on every call. With a few hundred rows that is a small part
of the work, but an expert of a top-1 MoE layer sees T / E rows per call (31 rows for T = 250,
E = 8 in a 10 s utterance), and repacking then costs about as much as the product itself. In
inference the weights do not change, so they are copied once into (in, out) order:

* ``prepacked_linear``: one Linear, run as ``addmm(bias, x, weight_t)`` (the dense FFN, and
  experts whose sizes ``grouped_mm`` does not take). Measured on a 2-core Xeon with AVX-512,
  torch 2.13, MKL: an E = 8 expert layer on 250 rows 1.17x the dense FFN's time, against
  1.69x through ``Linear`` and 1.37x with oneDNN-prepacked weights.
* ``stacked_expert_weights``: all experts of a layer stacked as (E, in, out) for two
  ``grouped_mm`` calls, which loop over the experts in C++ instead of Python (the same
  machine, E = 8 on 250 rows: the whole layer 1.62-1.88x the dense FFN against 1.66-2.15x
  with a Python loop of prepacked experts, one thread; 1.69-1.87x against 2.06-2.17x with two).
  The biases are folded in as an extra weight row, met by a column of ones in the input, so
  the GEMMs add them: no per-row bias gather and add (the layer then took 1.39-1.53x the
  dense FFN against 1.48-1.58x, one thread, three runs; 1.65-1.66x against 1.65-1.76x with
  two, two runs).

The copies are plain attributes: not part of the state dict, never saved, and rebuilt when a
weight is replaced (load_state_dict into a new tensor, ``.to()``) or modified in place (its
version counter changes). They are made only of plain layers (``plain_feed_forwards``).
"""

from typing import Callable, Iterable, List, NamedTuple, Optional

import torch


def plain_feed_forwards(feed_forwards: Iterable[torch.nn.Module]) -> bool:
    """Whether every feed-forward module can be computed from its weights alone: its ``w_1``
    and ``w_2`` are exactly ``torch.nn.Linear`` with a weight and a bias, and no forward hook
    is registered on it or on them.

    The fast paths (these copies, the experts' training Function, the grouped GEMMs) read the
    layers' weights and biases and call neither the layers nor the expert modules. A layer
    replaced by something else, such as a dynamically quantized one (ESPnet's
    ``--quantize_asr_model``) or a LoRA wrapper that adds its own low-rank term, and a module
    someone hooks (to record the experts' activations, say), run their own forward instead.
    """
    return all(_plain(ff) for ff in feed_forwards)


def _plain(ff: torch.nn.Module) -> bool:
    # Written out flat: the stacked inference path checks every expert on every call.
    w_1, w_2 = ff._modules["w_1"], ff._modules["w_2"]
    return (
        type(w_1) is torch.nn.Linear
        and type(w_2) is torch.nn.Linear
        and not (ff._forward_hooks or ff._forward_pre_hooks)
        and not (w_1._forward_hooks or w_1._forward_pre_hooks)
        and not (w_2._forward_hooks or w_2._forward_pre_hooks)
        and w_1._parameters.get("weight") is not None
        and w_1._parameters.get("bias") is not None
        and w_2._parameters.get("weight") is not None
        and w_2._parameters.get("bias") is not None
    )


def can_use_prepacked(module: torch.nn.Module, x: torch.Tensor) -> bool:
    """Prepared weights apply to float32 CPU inference without autograd or autocast."""
    return (
        not module.training
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def prepacked_linear(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` with the weight transposed once.

    x: (..., in) -> (..., out_features).
    """
    weight = linear.weight
    key = (weight.data_ptr(), weight._version, tuple(weight.shape))
    cached: Optional[tuple] = getattr(linear, "_prepacked", None)
    if cached is None or cached[0] != key:
        cached = (key, weight.detach().t().contiguous())
        object.__setattr__(linear, "_prepacked", cached)
    weight_t = cached[1]
    rows = x.reshape(-1, x.size(-1))
    if linear.bias is None:
        result = torch.mm(rows, weight_t)
    else:
        result = torch.addmm(linear.bias, rows, weight_t)
    return result.view(*x.shape[:-1], weight_t.size(1))


def grouped_mm_takes(input_size: int, hidden_units: int) -> bool:
    """Whether float32 ``grouped_mm`` takes experts of these sizes (16-byte aligned rows)."""
    return (
        hasattr(torch.nn.functional, "grouped_mm")
        and input_size % 4 == 0
        and hidden_units % 4 == 0
    )


def _with_ones_column(size: int) -> int:
    """``size`` plus a column of ones, padded to a multiple of 8 columns (aligned rows)."""
    return (size // 8 + 1) * 8


def gather_padded_with_ones(
    x: torch.Tensor, index: torch.Tensor, w_1: torch.Tensor
) -> torch.Tensor:
    """Rows ``index`` of x (N, in), padded with ones to (A, in'), the input width of a stacked
    w_1 from ``stacked_expert_weights``, whose bias row the first one-column meets.

    The rows are gathered straight into the padded buffer: padding x and then gathering took
    1.2x as long on 250 rows and 1.7-1.8x on 4000 (after the GEMMs, 1 and 2 threads).
    """
    input_size = x.size(1)
    rows = x.new_empty(index.numel(), w_1.size(1))
    rows[:, input_size:].fill_(1.0)
    torch.index_select(x, 0, index, out=rows[:, :input_size])
    return rows


class StackedExperts(NamedTuple):
    """A layer's experts laid out for two ``grouped_mm`` calls (``stacked_expert_weights``)."""

    w_1: torch.Tensor
    w_2: torch.Tensor
    activation: Callable[[torch.Tensor], torch.Tensor]  # the experts' inference_activation


def stacked_expert_weights(experts: torch.nn.ModuleList) -> Optional[StackedExperts]:
    """The experts' two linear layers stacked for ``grouped_mm`` with their biases folded in,
    laid out once, and their activation.

    experts: E ``FeedForward`` modules (Linear ``w_1`` in -> hidden and ``w_2`` hidden -> in,
    with biases, one activation). Returns w_1 (E, in', hidden') and w_2 (E, hidden', in) with
    in' and hidden' one column wider, rounded up to a multiple of 8. An input padded
    with ones to in' columns gets its bias from row ``in`` of w_1, which also sets hidden
    column ``hidden`` to 1 (activation(1) after the activation); row ``hidden`` of w_2 holds
    b_2 / activation(1) (every activation offered is 0 at 0 and not at 1). So the GEMMs add
    both biases. Cached on ``experts``. None unless the experts are plain
    (``plain_feed_forwards``).
    """
    key = _weights_key(experts)
    if key is None:
        return None
    cached: Optional[tuple] = experts.__dict__.get("_stacked_weights")
    if cached is None or cached[0] != key:
        layers = [(ff.w_1, ff.w_2) for ff in experts]
        input_size, hidden_units = layers[0][0].in_features, layers[0][0].out_features
        weight = layers[0][0].weight
        activation_at_one = float(experts[0].activation(weight.new_ones(())))
        if activation_at_one == 0.0:
            raise ValueError("bias folding needs an activation that is not 0 at 1")
        num_experts = len(layers)
        w_1 = weight.new_zeros(
            num_experts, _with_ones_column(input_size), _with_ones_column(hidden_units)
        )
        w_2 = weight.new_zeros(num_experts, w_1.size(2), input_size)
        with torch.no_grad():
            for index, (linear_1, linear_2) in enumerate(layers):
                w_1[index, :input_size, :hidden_units] = linear_1.weight.t()
                w_1[index, input_size, :hidden_units] = linear_1.bias
                w_1[index, input_size, hidden_units] = 1.0
                w_2[index, :hidden_units] = linear_2.weight.t()
                w_2[index, hidden_units] = linear_2.bias / activation_at_one
        cached = (key, StackedExperts(w_1, w_2, experts[0].inference_activation))
        object.__setattr__(experts, "_stacked_weights", cached)
    return cached[1]


def _weights_key(experts: torch.nn.ModuleList) -> Optional[List[int]]:
    """Storage address and version counter of every weight and bias of the experts: the key
    that tells whether their stacked copy is still current (checked on every call). None unless
    the experts are plain (``plain_feed_forwards``), which the same walk checks.

    Through _modules / _parameters with the four tensors named: nn.Module.__getattr__ would
    cost more than the check (8 experts: 10.4-11.5 us for this walk, plainness included, against
    49-51 us for the key alone through attribute lookups).
    """
    key: List[int] = []
    for expert in experts._modules.values():
        if not _plain(expert):
            return None
        for linear in (expert._modules["w_1"], expert._modules["w_2"]):
            weight, bias = linear._parameters["weight"], linear._parameters["bias"]
            key += (weight.data_ptr(), weight._version, bias.data_ptr(), bias._version)
    return key
