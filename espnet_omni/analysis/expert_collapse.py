"""Expert collapse, reported in the training log as it happens.

Token counts per block and expert are summed on the device every step and read back once per
window of ``window`` steps (no host sync in between). At the end of a window a block whose
expert received no token over the whole window, or whose busiest expert took more than
``max_share`` of the tokens, is reported with ``logging.warning``, which ESPnet writes to the
training log.
"""

import logging
from typing import List, Optional, Sequence

import torch

from espnet_omni.moe.losses import expert_token_counts
from espnet_omni.moe.router import RouterOutput


class ExpertCollapseMonitor:
    """Counts tokens per expert over windows of steps and describes collapses.

    Args:
        block_numbers: the 1-based numbers of the MoE blocks, in the encoder's order.
        num_experts: E.
        window: steps per window (>= 1).
        max_share: share of a block's tokens above which its busiest expert is reported.
    """

    def __init__(self, block_numbers: Sequence[int], num_experts: int, window: int, max_share: float):
        self.block_numbers = list(block_numbers)
        self.num_experts = num_experts
        self.window = window
        self.max_share = max_share
        self.steps = 0  # steps seen since training started
        self._counts: Optional[torch.Tensor] = None  # (blocks, E) over the current window
        self._seen: Optional[torch.Tensor] = None  # (blocks,) steps each block ran in the window

    def update(self, routing: Sequence[RouterOutput], blocks: Sequence[int]) -> List[str]:
        """Add one step's routing (of the blocks that ran, ``blocks``); at the end of a window,
        return the collapses found in it (else an empty list)."""
        if routing:
            device = routing[0].probs.device
            if self._counts is None or self._counts.device != device:
                self._counts = torch.zeros(len(self.block_numbers), self.num_experts, device=device)
                self._seen = torch.zeros(len(self.block_numbers), device=device)
            for block, layer in zip(blocks, routing):
                row = self.block_numbers.index(block)
                self._counts[row] += expert_token_counts(layer)
                self._seen[row] += 1
        self.steps += 1
        if self.steps % self.window or self._counts is None:
            return []
        counts, seen = self._counts.to("cpu", copy=True), self._seen.to("cpu", copy=True)
        self._counts.zero_()
        self._seen.zero_()
        return self.describe(counts, seen)

    def describe(self, counts: torch.Tensor, seen: torch.Tensor) -> List[str]:
        """Messages for the collapses in one window's (blocks, E) ``counts`` of the blocks that
        ran in it (``seen`` > 0)."""
        first, last = self.steps - self.window + 1, self.steps
        messages = []
        for block, row, ran in zip(self.block_numbers, counts, seen):
            total = float(row.sum())
            if not ran or total == 0:
                continue
            idle = [e for e, c in enumerate(row.tolist()) if c == 0]
            if idle:
                messages.append(
                    f"expert collapse: block {block}: experts {idle} received no token in steps "
                    f"{first}-{last}"
                )
            share, busiest = (row / total).max(0)
            if self.num_experts > 1 and float(share) > self.max_share:
                messages.append(
                    f"expert collapse: block {block}: expert {int(busiest)} took {float(share):.1%} "
                    f"of the tokens in steps {first}-{last} (above {self.max_share:.0%})"
                )
        return messages

    def log(self, routing: Sequence[RouterOutput], blocks: Sequence[int]) -> None:
        """:meth:`update`, with each collapse found written as a warning."""
        for message in self.update(routing, blocks):
            logging.warning(message)
