"""Mixture-of-Experts building blocks in plain PyTorch (no ESPnet imports)."""

from espnet_omni.moe.experts import Experts
from espnet_omni.moe.feed_forward import FeedForward
from espnet_omni.moe.layer import MoEFeedForward
from espnet_omni.moe.losses import load_balancing_loss, router_z_loss
from espnet_omni.moe.router import Router, RouterOutput

__all__ = [
    "Experts",
    "FeedForward",
    "MoEFeedForward",
    "Router",
    "RouterOutput",
    "load_balancing_loss",
    "router_z_loss",
]
