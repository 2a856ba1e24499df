"""ESPnetASRModel with the MoE auxiliary losses and routing statistics (``model: moe_espnet``)."""

import inspect
from typing import Dict, Tuple

import torch
from typeguard import typechecked

from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable

from espnet_omni.analysis.routing_stats import routing_health
from espnet_omni.moe.losses import mean_router_losses


class MoEESPnetASRModel(ESPnetASRModel):
    """ESPnet's ASR model plus the router losses of a MoE encoder.

    loss = ESPnet's loss + frames * (load_balance_weight * loss_lb + router_z_weight * loss_z),
    where loss_lb and loss_z are computed per MoE block (padded frames excluded) and averaged
    over blocks, and ``frames`` is the mean number of encoder frames per utterance. ESPnet's
    CTC loss is summed over each utterance and averaged over utterances; scaling the router
    losses the same way keeps their weights on the per-token scale they have in the
    literature (Switch Transformer 1e-2, ST-MoE z-loss 1e-3). ``scale_router_losses: false``
    adds them unscaled. ``stats`` gains ``loss_lb``, ``loss_z`` and per-block routing health
    (``route_entropy_b*``, ``route_max_load_b*``, ``route_unused_b*``, ``route_nmi``), which
    ESPnet logs and plots to ``exp/<dir>/images``. With an encoder that has no MoE block the
    model is ESPnet's.

    Args:
        load_balance_weight: weight of the Switch load-balancing loss.
        router_z_weight: weight of the router z-loss.
        scale_router_losses: multiply the router losses by the mean encoder frames per utterance.
        report_routing: add the routing health statistics to ``stats``.
        **kwargs: the arguments of ESPnetASRModel.
    """

    @typechecked
    def __init__(
        self,
        *args,
        load_balance_weight: float = 0.01,
        router_z_weight: float = 0.001,
        scale_router_losses: bool = True,
        report_routing: bool = True,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        for name, value in (
            ("load_balance_weight", load_balance_weight),
            ("router_z_weight", router_z_weight),
        ):
            if value < 0:
                raise ValueError(f"model_conf.{name} must be >= 0, got {value}")
        self.load_balance_weight = load_balance_weight
        self.router_z_weight = router_z_weight
        self.scale_router_losses = scale_router_losses
        self.report_routing = report_routing

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """ESPnet's forward, then the router losses of the encoder's MoE blocks."""
        loss, stats, weight = super().forward(
            speech, speech_lengths, text, text_lengths, **kwargs
        )
        routing = self.encoder.pop_routing() if hasattr(self.encoder, "pop_routing") else []
        if not routing:
            return loss, stats, weight
        loss_lb, loss_z = mean_router_losses(routing)
        aux = self.load_balance_weight * loss_lb + self.router_z_weight * loss_z
        if self.scale_router_losses:
            aux = aux * routing[0].real_tokens().sum() / speech.size(0)  # no host sync
        loss = loss + aux
        stats["loss_lb"] = loss_lb.detach()
        stats["loss_z"] = loss_z.detach()
        if self.report_routing:
            stats.update(routing_health(routing, self.encoder.moe_blocks))
        stats["loss"] = loss.detach()
        return force_gatherable((loss, stats, weight), loss.device)


# ESPnet's --print_config lists a class's defaults from its signature: show ESPnet's
# arguments and ours rather than *args/**kwargs.
_base = inspect.signature(ESPnetASRModel.__init__).parameters
_ours = inspect.signature(MoEESPnetASRModel.__init__).parameters
MoEESPnetASRModel.__signature__ = inspect.Signature(
    [p for n, p in _base.items() if n != "self"]
    + [p for n, p in _ours.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
)
