"""The dense position-wise feed-forward block, as in ESPnet, and the experts' activations.

``FeedForward`` is the dense twin's FFN: two ``torch.nn.Linear`` layers, so that it loads
ESPnet's ``PositionwiseFeedForward`` weights and anything that works on Linear layers (dynamic
quantization, LoRA wrappers, pruning, hooks) applies to it. Its two fast paths compute from the
layers' weights directly and step aside for anything that changes what a layer computes:

* CPU training without autocast: the experts' hand-written forward and backward
  (``eager_experts.experts_on_sorted_rows``) with the FFN as one expert on all rows;
* float32 CPU inference: each weight transposed once into (in, out) order. ``Linear`` computes
  ``x @ weight.T`` and the BLAS repacks the transposed weight on every call, which on a few
  hundred rows costs about as much as the product itself.
"""

from typing import Optional

import torch

from espnet_omni.moe import eager_experts

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


def computed_from_weights(ff: torch.nn.Module) -> bool:
    """Whether a FeedForward can be computed from its weights alone: its ``w_1`` and ``w_2``
    are exactly ``torch.nn.Linear`` with a weight and a bias, and no forward hook is registered
    on it or on them. A layer replaced by a dynamically quantized one (ESPnet's
    ``--quantize_asr_model``) or a LoRA wrapper, and a hooked module, run their own forward."""
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


def is_cpu_inference(module: torch.nn.Module, x: torch.Tensor) -> bool:
    """float32 CPU inference: eval mode, no autograd, no autocast."""
    return (
        not module.training
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def linear_with_weight_transposed_once(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` with the weight copied once into (in, out) order.

    The copy is a plain attribute, never saved, made again when the weight is replaced (its
    storage changes: load_state_dict into a new tensor, ``.to()``) or modified in place (its
    version counter changes). x: (..., in) -> (..., out_features).
    """
    weight = linear.weight
    key = (weight.data_ptr(), weight._version, tuple(weight.shape))
    cached: Optional[tuple] = getattr(linear, "_weight_transposed", None)
    if cached is None or cached[0] != key:
        cached = (key, weight.detach().t().contiguous())
        object.__setattr__(linear, "_weight_transposed", cached)
    weight_t = cached[1]
    rows = x.reshape(-1, x.size(-1))
    result = torch.addmm(linear.bias, rows, weight_t)
    return result.view(*x.shape[:-1], weight_t.size(1))


class FeedForward(torch.nn.Module):
    """Position-wise feed-forward block w_2(dropout(act(w_1(x)))), as in ESPnet.

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
        if x.device.type == "cpu" and computed_from_weights(self):
            if is_cpu_inference(self, x):
                hidden = linear_with_weight_transposed_once(self.w_1, x)
                hidden = hidden.relu_() if isinstance(self.activation, torch.nn.ReLU) else (
                    self.activation(hidden)
                )
                return linear_with_weight_transposed_once(self.w_2, hidden)
            if eager_experts.has_hand_written_backward(self.activation, x):
                rows = x.reshape(-1, x.size(-1))
                return eager_experts.experts_on_sorted_rows(
                    rows, [rows.size(0)], self.as_one_expert(), self.activation, self.dropout
                ).view_as(x)
        return self.w_2(self.dropout(self.activation(self.w_1(x))))

    def as_one_expert(self):
        """The weights as one expert of the stacked layout: views w_1 (1, d, f), b_1 (1, f),
        w_2 (1, f, d), b_2 (1, d)."""
        return (
            self.w_1.weight.t().unsqueeze(0),
            self.w_1.bias.unsqueeze(0),
            self.w_2.weight.t().unsqueeze(0),
            self.w_2.bias.unsqueeze(0),
        )
