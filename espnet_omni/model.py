"""ESPnetASRModel with the MoE auxiliary losses and routing statistics (``model: moe_espnet``)."""

import inspect
from typing import Dict, Tuple

import torch
from typeguard import typechecked

from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable

from espnet_omni.analysis.expert_collapse import ExpertCollapseMonitor
from espnet_omni.analysis.routing_stats import routing_health, routing_health_keys
from espnet_omni.moe.losses import ROUTER_LOSS_REDUCTIONS, router_losses


class MoEESPnetASRModel(ESPnetASRModel):
    """ESPnet's ASR model plus the router losses of a MoE encoder.

    loss = ESPnet's loss + frames * (load_balance_weight * loss_lb + router_z_weight * loss_z),
    where loss_lb and loss_z are computed per MoE block (padded frames excluded) and averaged
    over blocks (``router_loss_reduction: sum`` adds them, so that each block's weight does not
    shrink as 1/blocks), and ``frames`` is the mean number of encoder frames per utterance. ESPnet's
    CTC loss is summed over each utterance and averaged over utterances; scaling the router
    losses the same way keeps their weights on the per-token scale they have in the
    literature (Switch Transformer 1e-2, ST-MoE z-loss 1e-3). ``scale_router_losses: false``
    adds them unscaled. ``stats`` gains ``loss_lb``, ``loss_z`` and per-block routing health
    (``route_entropy_b*``, ``route_max_load_b*``, ``route_unused_b*``, ``route_load_b*_e*``,
    ``route_nmi``), which ESPnet logs and plots to ``exp/<dir>/images``; a block that layer drop
    skipped reports NaN, which ESPnet's reporter leaves out. ``loss_nonfinite`` is 1 for a
    step whose loss is NaN or inf (its epoch mean is the share of such steps; ESPnet skips
    their updates, its gradient norm being non-finite too). In training, an expert collapse
    (an expert without a token for ``expert_collapse_window`` steps, or one taking more than
    ``expert_collapse_max_share`` of a block's tokens over them) is written to the log as a
    warning at the end of each window. The routing is collected from the encoder for the
    duration of ``forward`` only (``collect_routing``), so inference (``encode``) leaves nothing
    of a batch on the encoder. With an encoder that has no MoE block the model is ESPnet's.

    Args:
        load_balance_weight: weight of the Switch load-balancing loss.
        router_z_weight: weight of the router z-loss.
        router_loss_reduction: ``mean`` or ``sum`` of the router losses over the MoE blocks.
        scale_router_losses: multiply the router losses by the mean encoder frames per utterance.
        report_routing: add the routing health statistics to ``stats``.
        expert_collapse_window: steps per expert-collapse check (0: no check).
        expert_collapse_max_share: share of a block's tokens above which one expert is
            reported as collapsed.
        **kwargs: the arguments of ESPnetASRModel.
    """

    @typechecked
    def __init__(
        self,
        *args,
        load_balance_weight: float = 0.01,
        router_z_weight: float = 0.001,
        router_loss_reduction: str = "mean",
        scale_router_losses: bool = True,
        report_routing: bool = True,
        expert_collapse_window: int = 100,
        expert_collapse_max_share: float = 0.9,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        for name, value in (
            ("load_balance_weight", load_balance_weight),
            ("router_z_weight", router_z_weight),
        ):
            if value < 0:
                raise ValueError(f"model_conf.{name} must be >= 0, got {value}")
        if router_loss_reduction not in ROUTER_LOSS_REDUCTIONS:
            raise ValueError(
                f"model_conf.router_loss_reduction must be one of {ROUTER_LOSS_REDUCTIONS}, "
                f"got {router_loss_reduction!r}"
            )
        self.load_balance_weight = load_balance_weight
        self.router_z_weight = router_z_weight
        self.router_loss_reduction = router_loss_reduction
        self.scale_router_losses = scale_router_losses
        self.report_routing = report_routing
        if expert_collapse_window < 0:
            raise ValueError(f"model_conf.expert_collapse_window must be >= 0, got {expert_collapse_window}")
        if not 0.0 < expert_collapse_max_share <= 1.0:
            raise ValueError(
                f"model_conf.expert_collapse_max_share must be in (0, 1], got {expert_collapse_max_share}"
            )
        moe_blocks = getattr(self.encoder, "moe_blocks", None)
        self.collapse_monitor = None
        if moe_blocks and expert_collapse_window:
            self.collapse_monitor = ExpertCollapseMonitor(
                moe_blocks, self.encoder.routers[0].num_experts,
                expert_collapse_window, expert_collapse_max_share,
            )

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """ESPnet's forward, then the router losses of the encoder's MoE blocks."""
        moe_blocks = getattr(self.encoder, "moe_blocks", None)
        if not moe_blocks:
            loss, stats, weight = super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
            stats["loss_nonfinite"] = (~torch.isfinite(loss.detach())).float()
            return loss, stats, weight
        # The routing lives only as long as this call: nothing of the batch stays on the
        # encoder once the losses are built.
        with self.encoder.collect_routing() as trace:
            loss, stats, weight = super().forward(
                speech, speech_lengths, text, text_lengths, **kwargs
            )
        nan = loss.new_tensor(float("nan")).detach()
        if trace.outputs:
            loss_lb, loss_z = router_losses(trace.outputs, self.router_loss_reduction)
            aux = self.load_balance_weight * loss_lb + self.router_z_weight * loss_z
            if self.scale_router_losses:
                frames = trace.outputs[0].real_tokens().sum()  # a tensor: no host sync
                aux = aux * frames / speech.size(0)
            loss = loss + aux
            stats["loss_lb"], stats["loss_z"] = loss_lb.detach(), loss_z.detach()
        else:  # layer drop skipped every MoE block
            stats["loss_lb"], stats["loss_z"] = nan, nan
        if self.report_routing:
            health = routing_health(trace.outputs, trace.blocks)
            # Every step reports the same keys, which distributed training's stats reduction
            # needs; a block skipped by layer drop reports NaN, which ESPnet's reporter leaves
            # out of its averages.
            num_experts = self.encoder.routers[0].num_experts
            for key in routing_health_keys(moe_blocks, num_experts):
                stats[key] = health.get(key, nan)
        if self.collapse_monitor is not None and self.training:
            self.collapse_monitor.log(trace.outputs, trace.blocks)
        stats["loss"] = loss.detach()
        stats["loss_nonfinite"] = (~torch.isfinite(stats["loss"])).float()
        return force_gatherable((loss, stats, weight), loss.device)


# ESPnet's --print_config lists a class's defaults from its signature: show ESPnet's
# arguments and ours rather than *args/**kwargs.
_base = inspect.signature(ESPnetASRModel.__init__).parameters
_ours = inspect.signature(MoEESPnetASRModel.__init__).parameters
MoEESPnetASRModel.__signature__ = inspect.Signature(
    [p for n, p in _base.items() if n != "self"]
    + [p for n, p in _ours.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
)
