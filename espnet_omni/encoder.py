"""Transformer encoder whose FFN blocks are sparse Mixture-of-Experts layers.

One implementation, three registered variants:

* ``omni_router`` (:class:`OmniRouterEncoder`): ONE router shared by every MoE block;
* ``switch`` (:class:`SwitchEncoder`): one router per MoE block (Switch Transformer);
* ``dense_transformer`` (:class:`DenseTransformerEncoder`): the dense twin, an ordinary
  FFN of the same size in every block.

Options keep the names and defaults of ESPnet's ``TransformerEncoder`` (202511 to 202611),
so moving from ``encoder: transformer`` means changing the name and adding the MoE keys. Every
``TransformerEncoder`` option is accepted except ``pos_enc_class`` (see
:data:`REFUSED_OPTIONS`); values that cannot apply to a block raise a ValueError saying why.
"""

import contextlib
import difflib
import inspect
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from typeguard import typechecked

from espnet2.asr.ctc import CTC
from espnet2.asr.encoder.abs_encoder import AbsEncoder

from espnet_omni.espnet_nets import (
    Conv1dLinear,
    Conv1dSubsampling2,
    Conv2dSubsampling,
    Conv2dSubsampling1,
    Conv2dSubsampling2,
    Conv2dSubsampling6,
    Conv2dSubsampling8,
    ConvolutionalPositionalEmbedding,
    EncoderLayer,
    LayerNorm,
    MultiHeadedAttention,
    MultiLayeredConv1d,
    PositionalEncoding,
    ScaledPositionalEncoding,
    TooShortUttError,
    check_short_utt,
)
from espnet_omni.moe.experts import Experts
from espnet_omni.moe.feed_forward import FeedForward
from espnet_omni.moe.layer import MoEFeedForward
from espnet_omni.moe.router import Router, RouterOutput


POSITIONAL_ENCODINGS = {
    "abs_pos": PositionalEncoding,
    "scaled_abs_pos": ScaledPositionalEncoding,
    "conv": ConvolutionalPositionalEmbedding,
}

CONV_SUBSAMPLING = {
    "conv1d2": Conv1dSubsampling2,
    "conv2d": Conv2dSubsampling,
    "conv2d1": Conv2dSubsampling1,
    "conv2d2": Conv2dSubsampling2,
    "conv2d6": Conv2dSubsampling6,
    "conv2d8": Conv2dSubsampling8,
}

# null (features already of width output_size, e.g. after an SSL frontend) is accepted too.
INPUT_LAYERS = sorted(CONV_SUBSAMPLING) + ["embed", "linear", "stack", "wav2vec"]

POSITIONWISE_LAYERS = ["linear", "conv1d", "conv1d-linear"]

# ESPnet TransformerEncoder options these encoders refuse, with the reason given to the user.
REFUSED_OPTIONS = {
    "pos_enc_class": (
        "ESPnet's TransformerEncoder uses it only when pos_enc_layer_type is neither abs_pos "
        "nor conv, and a config cannot name a class; choose the encoding with "
        f"pos_enc_layer_type ({', '.join(POSITIONAL_ENCODINGS)})"
    ),
}


def group_frames(x: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, T, D) -> (B, ceil(T / stride), D * stride): each group of ``stride`` consecutive
    frames concatenated, the last group padded with zeros."""
    batch, length, dim = x.shape
    pad = -length % stride
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    return x.reshape(batch, -1, dim * stride)


class FrameStackSubsampling(torch.nn.Module):
    """Concatenate ``stride`` consecutive frames, then project to d_model.

    The cheap front end of the released Omni-router models (4x stacking of 80-dim log-mel,
    then a linear layer) in place of convolutional subsampling. The last group is padded
    with zeros, so T' = ceil(T / stride) and every input frame is kept.

    Args:
        idim: feature dimension D.
        odim: d_model.
        stride: frames per group.
        pos_enc: positional encoding module applied after the projection.
    """

    def __init__(self, idim: int, odim: int, stride: int, pos_enc: torch.nn.Module):
        super().__init__()
        if stride < 1:
            raise ValueError(f"stack_frames must be >= 1, got {stride}")
        self.stride = stride
        self.out = torch.nn.Linear(idim * stride, odim)
        self.pos_enc = pos_enc

    def forward(
        self, x: torch.Tensor, x_mask: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(B, T, D), mask (B, 1, T) -> (B, T', odim), mask (B, 1, T')."""
        if x_mask is not None:
            # Frames past an utterance's end must not leak into its last group.
            x = x.masked_fill(~x_mask.transpose(1, 2), 0.0)
        x = self.pos_enc(self.out(group_frames(x, self.stride)))
        if x_mask is None:
            return x, None
        # A group is real when its first frame is: T' = ceil(T / stride).
        return x, x_mask[:, :, :: self.stride]


class Conv1dFeedForward(MultiLayeredConv1d):
    """ESPnet's MultiLayeredConv1d (``positionwise_layer_type: conv1d``), its padded frames
    zeroed before each convolution so that they never reach a real frame through the kernel
    (what ESPnet 202611's ``mask`` argument does). Same parameters as ESPnet's module."""

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T, d), mask (B, 1, T) bool, True for real frames -> (B, T, d)."""
        pad = None if mask is None else ~mask.transpose(1, 2)  # (B, T, 1)
        if pad is not None:
            x = x.masked_fill(pad, 0.0)
        hidden = torch.relu(self.w_1(x.transpose(-1, 1))).transpose(-1, 1)
        if pad is not None:
            hidden = hidden.masked_fill(pad, 0.0)
        return self.w_2(self.dropout(hidden).transpose(-1, 1)).transpose(-1, 1)


class Conv1dLinearFeedForward(Conv1dLinear):
    """ESPnet's Conv1dLinear (``positionwise_layer_type: conv1d-linear``), its padded frames
    zeroed before the convolution. Same parameters as ESPnet's module."""

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T, d), mask (B, 1, T) bool, True for real frames -> (B, T, d)."""
        if mask is not None:
            x = x.masked_fill(~mask.transpose(1, 2), 0.0)
        hidden = torch.relu(self.w_1(x.transpose(-1, 1))).transpose(-1, 1)
        return self.w_2(self.dropout(hidden))


CONV_FEED_FORWARDS = {"conv1d": Conv1dFeedForward, "conv1d-linear": Conv1dLinearFeedForward}


class MoEEncoderLayer(EncoderLayer):
    """ESPnet's EncoderLayer whose feed-forward block may be a MoEFeedForward.

    ``forward`` follows ``EncoderLayer.forward`` of ESPnet
    (espnet/nets/pytorch_backend/transformer/encoder_layer.py; espnet2/legacy/nets/... from
    202611), stochastic depth (``stochastic_depth_rate``) included. It differs in that:

    * the FFN gets the padding mask: a MoE FFN keeps padded frames out of dispatch, the
      balancing loss and the statistics; a convolutional FFN keeps them out of real frames'
      windows;
    * it also returns the block's RouterOutput (None for a dense block);
    * it has no ``cache`` argument: the cache serves frame-by-frame decoding with a
      decoder-style layer, and an encoder over whole utterances never passes one;
    * the attention weights ESPnet's MultiHeadedAttention keeps in ``attn`` are dropped once
      the attention has returned (ESPnet's attention plots read them from a forward hook,
      which has run by then), so no batch stays attached to the layer.
    """

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[RouterOutput]]:
        """(B, T, d), mask (B, 1, T) -> (B, T, d), mask, RouterOutput or None."""
        # With stochastic depth, x + f(x) becomes x + f(x) / (1 - p) in training.
        coeff = 1.0
        if self.training and self.stochastic_depth_rate > 0:
            if torch.rand(1).item() < self.stochastic_depth_rate:
                return x, mask, None
            coeff = 1.0 / (1.0 - self.stochastic_depth_rate)

        residual = x
        if self.normalize_before:
            x = self.norm1(x)
        attended = self.self_attn(x, x, x, mask)
        if getattr(self.self_attn, "attn", None) is not None:
            self.self_attn.attn = None
        if self.concat_after:
            x = residual + coeff * self.concat_linear(torch.cat((x, attended), dim=-1))
        else:
            x = residual + coeff * self.dropout(attended)
        if not self.normalize_before:
            x = self.norm1(x)

        residual = x
        if self.normalize_before:
            x = self.norm2(x)
        routing = None
        if isinstance(self.feed_forward, MoEFeedForward):
            x, routing = self.feed_forward(x, mask.squeeze(1))
        elif isinstance(self.feed_forward, tuple(CONV_FEED_FORWARDS.values())):
            x = self.feed_forward(x, mask)
        else:
            x = self.feed_forward(x)
        x = residual + coeff * self.dropout(x)
        if not self.normalize_before:
            x = self.norm2(x)
        return x, mask, routing


def resolve_moe_blocks(moe_layers: Union[str, Sequence[int]], num_blocks: int) -> List[int]:
    """Turn the ``moe_layers`` option into sorted 1-based block numbers.

    "all": every block (the released models); "every_other": blocks 2, 4, 6, ...
    (GShard / Switch convention); "none": no MoE block; or an explicit list of 1-based block
    numbers, as in ESPnet's ``interctc_layer_idx``.
    """
    if isinstance(moe_layers, str):
        choices = {
            "all": list(range(1, num_blocks + 1)),
            "every_other": list(range(2, num_blocks + 1, 2)),
            "none": [],
        }
        if moe_layers not in choices:
            raise ValueError(
                f"moe_layers must be one of {sorted(choices)} or a list of 1-based block "
                f"numbers, got '{moe_layers}'"
            )
        return choices[moe_layers]
    blocks = sorted(set(moe_layers))
    if blocks and (blocks[0] < 1 or blocks[-1] > num_blocks):
        raise ValueError(
            f"moe_layers lists block numbers 1..num_blocks={num_blocks}, got {list(moe_layers)}"
        )
    return blocks


@dataclass
class RoutingTrace:
    """What :meth:`MoETransformerEncoder.collect_routing` collects.

    Attributes:
        blocks: the 1-based number of each MoE block that ran, in the order it ran (every
            MoE block of every forward, unless layer drop skipped some).
        outputs: the RouterOutput of each, over the B * T' frames of its batch (batch-major).
    """

    blocks: List[int] = field(default_factory=list)
    outputs: List[RouterOutput] = field(default_factory=list)


class MoETransformerEncoder(AbsEncoder):
    """Transformer encoder with top-k MoE FFNs and an optionally shared router.

    Args (ESPnet TransformerEncoder names and meanings):
        input_size: input feature dimension (vocabulary size for ``input_layer: embed``).
        output_size: d_model.
        attention_heads: heads of self-attention.
        linear_units: hidden size of the dense FFN and (unless ``expert_units``) of each expert.
        num_blocks: number of encoder blocks.
        dropout_rate, positional_dropout_rate, attention_dropout_rate: dropout rates.
        input_layer: conv2d, conv2d1, conv2d2, conv2d6, conv2d8, conv1d2 (ESPnet's
            subsampling), linear, embed (token ids), wav2vec (positional encoding, LayerNorm
            when normalize_before, dropout: input_size must be output_size), null (features
            used as they are when input_size == output_size, else one Linear layer, as in
            ESPnet), or stack (``stack_frames`` frames concatenated + linear).
        pos_enc_layer_type: abs_pos, scaled_abs_pos or conv.
        normalize_before: pre-LN blocks (default) or post-LN.
        concat_after: as in ESPnet.
        positionwise_layer_type: the dense FFN: linear, conv1d (ESPnet's MultiLayeredConv1d)
            or conv1d-linear (ESPnet's Conv1dLinear). The convolutional ones apply ReLU
            (``activation_type`` must be relu) and see no padded frame. Experts are
            position-wise: with conv1d / conv1d-linear a MoE block needs
            ``positionwise_conv_kernel_size: 1``, where a convolution is that same map.
        positionwise_conv_kernel_size: odd kernel size of the conv1d FFNs.
        padding_idx: padding index of ``input_layer: embed``.
        interctc_layer_idx, interctc_use_conditioning: intermediate CTC, as in ESPnet.
        layer_drop_rate: LayerDrop: in training, each block is skipped with this probability
            (ESPnet's MultiSequential semantics, no rescaling). ESPnet's TransformerEncoder
            accepts the option but iterates over its blocks itself, so there it has no effect.
        qk_norm, use_flash_attn, use_sdpa: attention options of ESPnet's MultiHeadedAttention
            (ESPnet's TransformerEncoder has use_sdpa from 202611).

    Args (MoE):
        num_experts: experts per MoE block (E).
        moe_layers: "all", "every_other", "none" or a list of 1-based block numbers.
        share_router: True for the Omni-router (one router for all MoE blocks), False for
            Switch (one router per MoE block).
        top_k: experts per token.
        expert_units: hidden size of each expert (default ``linear_units``).
        activation_type: relu, gelu, swish or tanh, for experts and dense FFNs alike.
        capacity_factor: training capacity factor; null = dropless (default).
        eval_capacity_factor: capacity factor in eval mode; null = dropless.
        router_jitter: multiplicative router-input noise in training (0 = off).
        router_renormalize: with top_k > 1, rescale the k gates to sum to 1.
        experts_implementation: how the experts run (see ``espnet_omni.moe.experts``):
            "grouped_mm" (two grouped GEMMs, nothing read back to the host), "eager" (one GEMM
            pair per expert), or null: grouped_mm on CUDA GPUs of compute capability 9.0+
            under bfloat16 autocast and in float32 CPU inference, eager elsewhere.
        grouped_gemm: deprecated spelling of experts_implementation (true: grouped_mm,
            false: eager), read from configs written before it.
        stack_frames: group size of ``input_layer: stack``.

    The encoder keeps nothing of a batch: the routing that the router losses and statistics
    need is handed to whoever asks for it with :meth:`collect_routing`.
    """

    @typechecked
    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        attention_heads: int = 4,
        linear_units: int = 1024,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        input_layer: Optional[str] = "conv2d",
        pos_enc_layer_type: str = "abs_pos",
        normalize_before: bool = True,
        concat_after: bool = False,
        positionwise_layer_type: str = "linear",
        positionwise_conv_kernel_size: int = 1,
        padding_idx: int = -1,
        interctc_layer_idx: List[int] = [],
        interctc_use_conditioning: bool = False,
        layer_drop_rate: float = 0.0,
        qk_norm: bool = False,
        use_flash_attn: bool = True,
        use_sdpa: bool = False,
        num_experts: int = 8,
        moe_layers: Union[str, List[int]] = "all",
        share_router: bool = True,
        top_k: int = 1,
        expert_units: Optional[int] = None,
        activation_type: str = "relu",
        capacity_factor: Optional[float] = None,
        eval_capacity_factor: Optional[float] = None,
        router_jitter: float = 0.0,
        router_renormalize: bool = False,
        experts_implementation: Optional[str] = None,
        grouped_gemm: Optional[bool] = None,
        stack_frames: int = 4,
    ):
        super().__init__()
        if grouped_gemm is not None:
            if experts_implementation is not None:
                raise ValueError(
                    "grouped_gemm is the deprecated spelling of experts_implementation: give "
                    "only experts_implementation"
                )
            experts_implementation = "grouped_mm" if grouped_gemm else "eager"
        self._output_size = output_size
        self.normalize_before = normalize_before
        self.moe_blocks = resolve_moe_blocks(moe_layers, num_blocks)
        self.share_router = share_router
        self._check_feed_forward_options(
            positionwise_layer_type, positionwise_conv_kernel_size, activation_type,
            bool(self.moe_blocks),
        )
        if padding_idx != -1 and input_layer != "embed":
            raise ValueError(
                f"padding_idx is the padding index of input_layer: embed, got padding_idx "
                f"{padding_idx} with input_layer: {input_layer}"
            )
        if not 0.0 <= layer_drop_rate < 1.0:
            raise ValueError(f"layer_drop_rate must be in [0, 1), got {layer_drop_rate}")
        self.layer_drop_rate = layer_drop_rate

        if pos_enc_layer_type not in POSITIONAL_ENCODINGS:
            raise ValueError(
                f"pos_enc_layer_type must be one of {sorted(POSITIONAL_ENCODINGS)}, "
                f"got '{pos_enc_layer_type}'"
            )
        pos_enc_class = POSITIONAL_ENCODINGS[pos_enc_layer_type]
        self.embed = self._build_input_layer(
            input_layer, input_size, output_size, dropout_rate,
            pos_enc_class(output_size, positional_dropout_rate), stack_frames, padding_idx,
            normalize_before,
        )

        if use_flash_attn:
            try:
                import flash_attn  # noqa: F401
                from espnet2.torch_utils.get_flash_attn_compatability import (
                    is_flash_attn_supported,
                )

                use_flash_attn = is_flash_attn_supported()
            except Exception:
                use_flash_attn = False

        expert_units = expert_units or linear_units
        shared_router = (
            Router(output_size, num_experts, top_k, router_jitter, router_renormalize)
            if share_router and self.moe_blocks
            else None
        )

        def feed_forward(block: int) -> torch.nn.Module:
            if block not in self.moe_blocks:
                if positionwise_layer_type in CONV_FEED_FORWARDS:
                    return CONV_FEED_FORWARDS[positionwise_layer_type](
                        output_size, linear_units, positionwise_conv_kernel_size, dropout_rate
                    )
                return FeedForward(output_size, linear_units, dropout_rate, activation_type)
            router = shared_router or Router(
                output_size, num_experts, top_k, router_jitter, router_renormalize
            )
            experts = Experts(
                num_experts, output_size, expert_units, dropout_rate, activation_type,
                experts_implementation,
            )
            return MoEFeedForward(router, experts, capacity_factor, eval_capacity_factor)

        self.encoders = torch.nn.ModuleList(
            MoEEncoderLayer(
                output_size,
                MultiHeadedAttention(
                    attention_heads, output_size, attention_dropout_rate, qk_norm,
                    use_flash_attn, False, False, use_sdpa,
                ),
                feed_forward(block),
                dropout_rate,
                normalize_before,
                concat_after,
            )
            for block in range(1, num_blocks + 1)
        )
        if normalize_before:
            self.after_norm = LayerNorm(output_size)

        if interctc_layer_idx and not (
            0 < min(interctc_layer_idx) and max(interctc_layer_idx) < num_blocks
        ):
            raise ValueError(
                f"interctc_layer_idx must lie in 1..num_blocks-1={num_blocks - 1}, "
                f"got {interctc_layer_idx}"
            )
        self.interctc_layer_idx = interctc_layer_idx
        self.interctc_use_conditioning = interctc_use_conditioning
        self.conditioning_layer = None
        self._routing_trace: Optional[RoutingTrace] = None

    @staticmethod
    def _check_feed_forward_options(
        positionwise_layer_type: str, kernel_size: int, activation_type: str, has_moe: bool
    ) -> None:
        if positionwise_layer_type not in POSITIONWISE_LAYERS:
            raise ValueError(
                f"positionwise_layer_type must be one of {POSITIONWISE_LAYERS}, "
                f"got '{positionwise_layer_type}'"
            )
        if positionwise_layer_type == "linear":
            if kernel_size != 1:
                raise ValueError(
                    "positionwise_conv_kernel_size is the kernel of positionwise_layer_type "
                    f"conv1d / conv1d-linear; a linear FFN has none (got {kernel_size})"
                )
            return
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"positionwise_conv_kernel_size must be odd and >= 1 (an even kernel shortens "
                f"the sequence and breaks the residual connection), got {kernel_size}"
            )
        if activation_type != "relu":
            raise ValueError(
                f"positionwise_layer_type: {positionwise_layer_type} applies ReLU (ESPnet's "
                f"convolutional FFNs); activation_type '{activation_type}' needs "
                "positionwise_layer_type: linear"
            )
        if has_moe and kernel_size != 1:
            raise ValueError(
                f"positionwise_layer_type: {positionwise_layer_type} with "
                f"positionwise_conv_kernel_size {kernel_size} cannot apply to MoE blocks: the "
                "router sends each frame to its own expert, and a kernel wider than one frame "
                "would need the neighbouring frames, which go to other experts. Use "
                "positionwise_conv_kernel_size 1 (a convolution over one frame is the "
                "position-wise map experts compute) or encoder dense_transformer"
            )

    @staticmethod
    def _build_input_layer(
        input_layer: Optional[str],
        input_size: int,
        output_size: int,
        dropout_rate: float,
        pos_enc: torch.nn.Module,
        stack_frames: int,
        padding_idx: int,
        normalize_before: bool,
    ) -> Optional[torch.nn.Module]:
        if input_layer in CONV_SUBSAMPLING:
            return CONV_SUBSAMPLING[input_layer](input_size, output_size, dropout_rate, pos_enc)
        if input_layer == "stack":
            return FrameStackSubsampling(input_size, output_size, stack_frames, pos_enc)
        if input_layer == "linear":
            return torch.nn.Sequential(
                torch.nn.Linear(input_size, output_size),
                torch.nn.LayerNorm(output_size),
                torch.nn.Dropout(dropout_rate),
                torch.nn.ReLU(),
                pos_enc,
            )
        if input_layer == "embed":
            return torch.nn.Sequential(
                torch.nn.Embedding(input_size, output_size, padding_idx=padding_idx),
                pos_enc,
            )
        if input_layer == "wav2vec":
            if input_size != output_size:
                raise ValueError(
                    "input_layer: wav2vec has no projection: input_size must equal "
                    f"output_size, got {input_size} and {output_size} (input_layer: null "
                    "projects with one Linear layer)"
                )
            return torch.nn.Sequential(
                pos_enc,
                torch.nn.LayerNorm(output_size) if normalize_before else torch.nn.Identity(),
                torch.nn.Dropout(dropout_rate),
            )
        if input_layer is None:
            # As ESPnet: features of width output_size are used as they are (no positional
            # encoding), others projected by one Linear layer.
            if input_size == output_size:
                return None
            return torch.nn.Linear(input_size, output_size)
        raise ValueError(
            f"input_layer must be one of {INPUT_LAYERS} or null, got '{input_layer}'"
        )

    def output_size(self) -> int:
        return self._output_size

    @property
    def routers(self) -> List[Router]:
        """The distinct Router modules (one for the Omni-router, one per MoE block for Switch)."""
        seen: Dict[int, Router] = {}
        for layer in self.encoders:
            if isinstance(layer.feed_forward, MoEFeedForward):
                seen.setdefault(id(layer.feed_forward.router), layer.feed_forward.router)
        return list(seen.values())

    @contextlib.contextmanager
    def collect_routing(self) -> Iterator[RoutingTrace]:
        """Collect the routing of the forwards run inside the ``with`` block.

        ::

            with encoder.collect_routing() as trace:
                out, olens, _ = encoder(xs_pad, ilens)
            losses = router_losses(trace.outputs)

        Outside such a block the encoder keeps no RouterOutput, so inference leaves nothing
        of a batch attached to it. The trace is released when the block exits.
        """
        if self._routing_trace is not None:
            raise RuntimeError("collect_routing() is already active on this encoder")
        trace = RoutingTrace()
        self._routing_trace = trace
        try:
            yield trace
        finally:
            self._routing_trace = None

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: torch.Tensor = None,
        masks: torch.Tensor = None,
        ctc: CTC = None,
        return_all_hs: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Encode padded features (ESPnet TransformerEncoder's arguments and outputs).

        Args:
            xs_pad: (B, T, D) input features, or (B, T) token ids for ``input_layer: embed``.
            ilens: (B,) input lengths.
            prev_states: not used.
            masks: (B, T) bool, True at padded frames; replaces the mask made from ``ilens``.
            ctc: CTC module, for intermediate-CTC conditioning.
            return_all_hs: also return every block's output (without intermediate CTC).

        Returns:
            (B, T', d) encoded states (or, with intermediate CTC / return_all_hs, a tuple
            of them and the intermediate outputs), (B,) output lengths, None.
        """
        if masks is None:
            # Built from the padded length, not max(ilens) as ESPnet's make_pad_mask does:
            # reading the maximum would wait for the GPU on every forward.
            frames = torch.arange(xs_pad.size(1), device=xs_pad.device)
            masks = (frames[None, :] < ilens.to(xs_pad.device)[:, None])[:, None, :]
        else:
            masks = ~masks[:, None, :].to(xs_pad.device)
        if self.embed is None:
            pass
        elif isinstance(self.embed, tuple(CONV_SUBSAMPLING.values())):
            too_short, limit = check_short_utt(self.embed, xs_pad.size(1))
            if too_short:
                raise TooShortUttError(
                    f"has {xs_pad.size(1)} frames and is too short for subsampling "
                    f"(it needs more than {limit} frames), return empty results",
                    xs_pad.size(1),
                    limit,
                )
            xs_pad, masks = self.embed(xs_pad, masks)
        elif isinstance(self.embed, FrameStackSubsampling):
            xs_pad, masks = self.embed(xs_pad, masks)
        else:
            xs_pad = self.embed(xs_pad)

        keep = None
        if self.training and self.layer_drop_rate > 0:
            # One draw per block on the host, as ESPnet's MultiSequential: no device sync.
            keep = (torch.rand(len(self.encoders)) >= self.layer_drop_rate).tolist()
        trace = self._routing_trace
        intermediate_outs = []
        for block, layer in enumerate(self.encoders, start=1):
            if keep is None or keep[block - 1]:
                xs_pad, masks, layer_routing = layer(xs_pad, masks)
                if layer_routing is not None and trace is not None:
                    trace.blocks.append(block)
                    trace.outputs.append(layer_routing)
            if not self.interctc_layer_idx:
                if return_all_hs:
                    intermediate_outs.append(xs_pad)
            elif block in self.interctc_layer_idx:
                encoder_out = self.after_norm(xs_pad) if self.normalize_before else xs_pad
                intermediate_outs.append((block, encoder_out))
                if self.interctc_use_conditioning:
                    xs_pad = xs_pad + self.conditioning_layer(ctc.softmax(encoder_out))

        if self.normalize_before:
            xs_pad = self.after_norm(xs_pad)
        olens = masks.squeeze(1).sum(1)
        if intermediate_outs:
            return (xs_pad, intermediate_outs), olens, None
        return xs_pad, olens, None


def _variant_of(base, fixed: Dict[str, object], hidden: Sequence[str] = ()):
    """Class decorator for a registered variant of ``base`` with some options fixed.

    The variant accepts the base's options minus ``fixed`` and ``hidden``; an option of
    :data:`REFUSED_OPTIONS` raises a ValueError giving the reason, an unknown one a ValueError
    naming it, the closest valid name and the encoder. Its signature (what ESPnet's
    --print_config shows) is the base's without those options.
    """

    base_sig = inspect.signature(base.__init__)
    removed = set(fixed) | set(hidden)
    params = [p for name, p in base_sig.parameters.items() if name not in removed]

    def decorate(cls):
        options = [p.name for p in params if p.name not in ("self", "input_size")]

        def __init__(self, input_size: int, **kwargs):
            refused = [k for k in kwargs if k in REFUSED_OPTIONS]
            if refused:
                raise ValueError(
                    f"encoder_conf of encoder '{cls.registered_name}': "
                    + "; ".join(f"option '{k}' is not supported: {REFUSED_OPTIONS[k]}"
                                for k in refused)
                )
            unknown = [k for k in kwargs if k not in options]
            if unknown:
                hints = []
                for key in unknown:
                    close = difflib.get_close_matches(key, options, n=1)
                    hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
                raise ValueError(
                    f"encoder_conf of encoder '{cls.registered_name}': unknown option(s) "
                    f"{', '.join(hints)}. Valid options: {', '.join(options)}"
                )
            base.__init__(self, input_size, **kwargs, **fixed)

        __init__.__signature__ = base_sig.replace(parameters=params)
        __init__.__doc__ = cls.__doc__
        cls.__init__ = __init__
        cls.__signature__ = inspect.Signature(params[1:])
        return cls

    return decorate


MOE_ONLY_OPTIONS = (
    "num_experts", "moe_layers", "top_k", "expert_units", "capacity_factor",
    "eval_capacity_factor", "router_jitter", "router_renormalize", "experts_implementation",
    "grouped_gemm",
)


@_variant_of(MoETransformerEncoder, fixed={"share_router": True})
class OmniRouterEncoder(MoETransformerEncoder):
    """Omni-router encoder: ONE router shared by all MoE blocks (``encoder: omni_router``)."""

    registered_name = "omni_router"


@_variant_of(MoETransformerEncoder, fixed={"share_router": False})
class SwitchEncoder(MoETransformerEncoder):
    """Switch Transformer encoder: one router per MoE block (``encoder: switch``)."""

    registered_name = "switch"


@_variant_of(
    MoETransformerEncoder,
    fixed={"moe_layers": "none", "share_router": False},
    hidden=[o for o in MOE_ONLY_OPTIONS if o != "moe_layers"],
)
class DenseTransformerEncoder(MoETransformerEncoder):
    """The dense twin: the same blocks with an ordinary FFN (``encoder: dense_transformer``)."""

    registered_name = "dense_transformer"
