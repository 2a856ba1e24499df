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

The copies are plain attributes: not part of the state dict, never saved, and rebuilt when a
weight is replaced (load_state_dict into a new tensor, ``.to()``) or modified in place (its
version counter changes).
"""

from typing import Optional, Tuple

import torch


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


def stacked_expert_weights(
    experts: torch.nn.ModuleList,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The experts' two linear layers stacked for ``grouped_mm``, laid out once.

    experts: E modules with Linear layers ``w_1`` (in -> hidden) and ``w_2`` (hidden -> in),
    both with biases. Returns w_1 (E, in, hidden), b_1 (E + 1, hidden), w_2 (E, hidden, in),
    b_2 (E + 1, in); each bias has a zero row E for the sentinel expert of unserved tokens.
    Cached on ``experts``.
    """
    # Through _modules / _parameters: nn.Module.__getattr__ would cost more than the check.
    layers = [(ff._modules["w_1"], ff._modules["w_2"]) for ff in experts._modules.values()]
    tensors = [p for pair in layers for layer in pair for p in layer._parameters.values()]
    key = [(p.data_ptr(), p._version) for p in tensors]
    cached: Optional[tuple] = experts.__dict__.get("_stacked_weights")
    if cached is None or cached[0] != key:
        stacked = []
        for index in (0, 1):
            linears = [pair[index] for pair in layers]
            weight = torch.stack([linear.weight.detach().t() for linear in linears])
            bias = torch.stack([linear.bias.detach() for linear in linears])
            stacked += [weight, torch.cat([bias, bias.new_zeros(1, bias.size(1))])]
        cached = (key, tuple(stacked))
        object.__setattr__(experts, "_stacked_weights", cached)
    return cached[1]
