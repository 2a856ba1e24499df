"""Counts of a model's routing over data sets, in memory bounded by the model's shape.

:class:`RoutingCounts` takes the routing of one batch at a time (:class:`BatchRouting`) and keeps
only counts: per pair of MoE layers the E x E table of their experts' co-occurrence, per layer
and set (and speaker) the expert usage, per layer and expert the frames greedy CTC labels blank,
and the distinct expert paths through the layers up to ``max_paths`` of them. No frame is kept,
except those of one example utterance. :meth:`RoutingCounts.report` turns them into the
``routing.json`` entry of a model; :class:`NoisePairCounts` compares the routing of the same
utterances clean and noisy.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from espnet_omni.analysis.dependence import MEASURES, entropy, js_divergence


@dataclass
class BatchRouting:
    """The routing of a batch's real frames, utterance after utterance.

    Attributes:
        keys: the B utterance ids.
        lengths: (B,) encoder frames of each utterance (N = lengths.sum()).
        experts: (L, N) top-1 expert of each frame in each MoE layer.
        chosen_prob: (L, N) router probability of that expert.
        entropy: (L, N) entropy (nats) of each frame's router distribution.
        prob_sum: (L, E) router probabilities summed over the N frames.
        blank: (N,) bool, True where greedy CTC labels the frame blank.
    """

    keys: List[str]
    lengths: np.ndarray
    experts: np.ndarray
    chosen_prob: np.ndarray
    entropy: np.ndarray
    prob_sum: np.ndarray
    blank: np.ndarray


def layer_counts(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """(L, N) experts -> (L, E) counts of each expert in each layer."""
    layers = experts.shape[0]
    offsets = np.arange(layers)[:, None] * num_experts
    return np.bincount((experts + offsets).ravel(), minlength=layers * num_experts).reshape(layers, num_experts)


def _usage(counts: np.ndarray) -> np.ndarray:
    """(L, E) counts -> (L, E) shares of each layer's frames."""
    totals = counts.sum(1, keepdims=True)
    return counts / np.maximum(totals, 1)


def _rounded(x, digits: int = 4):
    return np.round(np.asarray(x, dtype=np.float64), digits).tolist()


def _mean_js(usage: np.ndarray, reference: np.ndarray) -> List[float]:
    return [js_divergence(u, r) for u, r in zip(usage, reference)]


class RoutingCounts:
    """Accumulated routing of one model over named data sets.

    Args:
        blocks: the 1-based numbers of the model's L MoE blocks.
        num_experts: E.
        max_paths: the most distinct expert paths counted one by one; beyond them new paths are
            counted together (and ``paths.complete`` is false).
        example_utt: the utterance whose frame-by-frame path is kept (default: the first seen).
    """

    def __init__(
        self,
        blocks: Sequence[int],
        num_experts: int,
        max_paths: int = 200_000,
        example_utt: Optional[str] = None,
    ):
        self.blocks = list(blocks)
        self.num_layers, self.num_experts = len(self.blocks), num_experts
        layers, experts = self.num_layers, num_experts
        self.pair_counts = np.zeros((layers, layers, experts, experts), dtype=np.int64)
        self.blank_counts = np.zeros((layers, experts, 2), dtype=np.int64)  # [..., 1] = blank
        self.entropy_sum = np.zeros(layers)
        self.chosen_prob_sum = np.zeros(layers)
        self.prob_sum = np.zeros((layers, experts))
        self.set_usage: Dict[str, np.ndarray] = {}
        self.set_utterances: Dict[str, int] = {}
        self.speaker_usage: Dict[str, Dict[str, np.ndarray]] = {}
        self.reference_name: Optional[str] = None
        self.reference_usage = np.zeros((layers, experts), dtype=np.int64)
        self.max_paths = max_paths
        self.paths: Dict[bytes, int] = {}
        self.unlisted_path_frames = 0
        self.path_dtype = np.uint8 if num_experts <= 256 else np.uint16
        self.example_utt = example_utt
        self.example: Optional[dict] = None
        self.pair_chunk = 16384  # frames whose pair codes are made at once: bounds memory

    @property
    def frames(self) -> int:
        return int(self.pair_counts[0, 0].sum()) if self.num_layers else 0

    def add_reference(self, name: str, batch: BatchRouting) -> None:
        """Count a batch of the reference set (e.g. training data) that usage is compared with;
        it counts in nothing else."""
        self.reference_name = name
        self.reference_usage += layer_counts(batch.experts, self.num_experts)

    def add(self, set_name: str, batch: BatchRouting, speakers: Optional[Sequence[str]] = None) -> None:
        """Count a batch of ``set_name``; ``speakers`` gives each utterance's speaker."""
        layers, experts = self.num_layers, self.num_experts
        ex = batch.experts.astype(np.int64)
        if ex.shape[0] != layers or (ex.size and (ex.min() < 0 or ex.max() >= experts)):
            raise ValueError(f"expected ({layers}, N) expert ids below {experts}, got shape {ex.shape}")
        n = ex.shape[1]
        if n == 0:
            return
        self._add_pairs(ex)

        blank = batch.blank.astype(np.int64)
        codes = (np.arange(layers)[:, None] * experts + ex) * 2 + blank[None, :]
        self.blank_counts += np.bincount(codes.ravel(), minlength=layers * experts * 2).reshape(
            layers, experts, 2
        )
        self.entropy_sum += batch.entropy.sum(1)
        self.chosen_prob_sum += batch.chosen_prob.sum(1)
        self.prob_sum += batch.prob_sum

        counts = layer_counts(ex, self.num_experts)
        self.set_usage[set_name] = self.set_usage.get(set_name, 0) + counts
        self.set_utterances[set_name] = self.set_utterances.get(set_name, 0) + len(batch.keys)
        if speakers is not None:
            per_speaker = self.speaker_usage.setdefault(set_name, {})
            start = 0
            for speaker, length in zip(speakers, batch.lengths.tolist()):
                utt_counts = layer_counts(ex[:, start:start + length], self.num_experts)
                per_speaker[speaker] = per_speaker.get(speaker, 0) + utt_counts
                start += length

        self._add_paths(ex)
        if self.example is None and (self.example_utt is None or self.example_utt in batch.keys):
            index = 0 if self.example_utt is None else batch.keys.index(self.example_utt)
            start = int(batch.lengths[:index].sum())
            frames = slice(start, start + int(batch.lengths[index]))
            self.example = {
                "set": set_name,
                "utterance": batch.keys[index],
                "experts": ex[:, frames].T.tolist(),  # T x L
                "probability": _rounded(batch.chosen_prob[:, frames].T, 3),
                "blank": batch.blank[frames].astype(bool).tolist(),
            }

    def _add_pairs(self, ex: np.ndarray) -> None:
        """Add the (L, N) experts' co-occurrence tables of every pair of layers."""
        chunk = self.pair_chunk
        layers, experts = self.num_layers, self.num_experts
        first, second = np.triu_indices(layers)  # pairs i <= j; the lower triangle mirrors them
        pair = np.arange(first.size)[:, None] * experts * experts
        tables = np.zeros((first.size, experts * experts), dtype=np.int64)
        for start in range(0, ex.shape[1], chunk):  # bounded memory: P x chunk codes at a time
            part = ex[:, start:start + chunk]
            codes = pair + part[first] * experts + part[second]
            tables += np.bincount(codes.ravel(), minlength=tables.size).reshape(tables.shape)
        tables = tables.reshape(-1, experts, experts)
        self.pair_counts[first, second] += tables
        off = first != second
        self.pair_counts[second[off], first[off]] += tables[off].transpose(0, 2, 1)

    def _add_paths(self, ex: np.ndarray) -> None:
        rows, counts = np.unique(ex.T.astype(self.path_dtype), axis=0, return_counts=True)
        for row, count in zip(rows, counts.tolist()):
            key = row.tobytes()
            if key in self.paths:
                self.paths[key] += count
            elif len(self.paths) < self.max_paths:
                self.paths[key] = count
            else:
                self.unlisted_path_frames += count

    def _distinct_prefixes(self) -> List[int]:
        """The number of distinct paths through the first 1, 2, ..., L layers."""
        width = np.dtype(self.path_dtype).itemsize
        return [len({key[:depth * width] for key in self.paths}) for depth in range(1, self.num_layers + 1)]

    def report(self, top_paths: int = 10) -> dict:
        """The ``routing.json`` entry of the model (see ``docs/routing.md``)."""
        layers, experts = self.num_layers, self.num_experts
        frames = self.frames
        log_e = float(np.log(experts)) if experts > 1 else 1.0
        agreement = {name: np.eye(layers).tolist() for name in MEASURES}
        for name, measure in MEASURES.items():
            for i in range(layers):
                for j in range(layers):
                    if i != j:
                        agreement[name][i][j] = round(measure(self.pair_counts[i, j]), 4)
        off_diagonal = ~np.eye(layers, dtype=bool)
        adjacent = np.eye(layers, k=1, dtype=bool)
        agreement["mean_offdiagonal"] = {
            name: round(float(np.asarray(agreement[name])[off_diagonal].mean()), 4) if layers > 1 else None
            for name in MEASURES
        }
        agreement["mean_adjacent"] = {
            name: round(float(np.asarray(agreement[name])[adjacent].mean()), 4) if layers > 1 else None
            for name in MEASURES
        }

        load_counts = np.stack([self.pair_counts[i, i].diagonal() for i in range(layers)]) if layers else np.zeros((0, experts))
        load = _usage(load_counts)
        prefixes = self._distinct_prefixes()
        complete = self.unlisted_path_frames == 0
        layer_entries = []
        for i, block in enumerate(self.blocks):
            same = None
            if i > 0:
                same = round(float(np.trace(self.pair_counts[i - 1, i]) / max(frames, 1)), 4)
            layer_entries.append({
                "block": block,
                "entropy": round(float(self.entropy_sum[i] / max(frames, 1) / log_e), 4),
                "load": _rounded(load[i]),
                "max_load": round(float(load[i].max()), 4) if experts else None,
                "load_balance": round(entropy(load_counts[i]) / log_e, 4),
                "unused_experts": int((load_counts[i] == 0).sum()),
                "mean_probability": _rounded(self.prob_sum[i] / max(frames, 1)),
                "chosen_probability": round(float(self.chosen_prob_sum[i] / max(frames, 1)), 4),
                "same_as_previous": same,
                "distinct_paths": prefixes[i],
            })

        ranked = sorted(self.paths.items(), key=lambda kv: -kv[1])[:top_paths]
        paths = {
            "distinct": len(self.paths),
            "complete": complete,
            "unlisted_frames": self.unlisted_path_frames,
            "possible": experts**layers,
            "entropy_bits": round(entropy(np.array(list(self.paths.values()))) / np.log(2), 4),
            "top": [
                {"experts": np.frombuffer(key, dtype=self.path_dtype).tolist(), "share": round(count / max(frames, 1), 4)}
                for key, count in ranked
            ],
        }

        reference_name = self.reference_name
        reference = self.reference_usage
        if reference_name is None:  # no reference set: the pooled usage of the sets
            reference_name, reference = "all sets", load_counts
        reference_usage = _usage(reference)
        sets = {}
        for name, counts in self.set_usage.items():
            js = _mean_js(_usage(counts), reference_usage)
            sets[name] = {
                "utterances": self.set_utterances[name],
                "frames": int(counts[0].sum()),
                "usage": _rounded(_usage(counts)),
                "js_divergence": _rounded(js, 5),
                "mean_js_divergence": round(float(np.mean(js)), 5),
            }
        speakers = {}
        for name, per_speaker in self.speaker_usage.items():
            speakers[name] = {}
            for speaker, counts in sorted(per_speaker.items()):
                js = _mean_js(_usage(counts), reference_usage)
                speakers[name][speaker] = {
                    "frames": int(counts[0].sum()),
                    "usage": _rounded(_usage(counts)),
                    "mean_js_divergence": round(float(np.mean(js)), 5),
                }

        blank_frames = int(self.blank_counts[0, :, 1].sum()) if layers else 0
        ctc_layers = []
        for i, block in enumerate(self.blocks):
            blank, token = self.blank_counts[i, :, 1], self.blank_counts[i, :, 0]
            ctc_layers.append({
                "block": block,
                "blank_load": _rounded(blank / max(blank.sum(), 1)),
                "token_load": _rounded(token / max(token.sum(), 1)),
                "blank_share_of_expert": _rounded(blank / np.maximum(blank + token, 1)),
            })
        return {
            "num_experts": experts,
            "moe_blocks": self.blocks,
            "frames": frames,
            "utterances": sum(self.set_utterances.values()),
            "agreement": agreement,
            "layers": layer_entries,
            "paths": paths,
            "reference": {
                "name": reference_name,
                "frames": int(reference[0].sum()) if layers else 0,
                "usage": _rounded(reference_usage),
            },
            "sets": sets,
            "speakers": speakers,
            "ctc": {"blank_share": round(blank_frames / max(frames, 1), 4), "layers": ctc_layers},
            "example": self.example,
        }


class NoisePairCounts:
    """Per MoE layer, how many frames change expert between two versions of the same
    utterances (clean and noisy), compared frame by frame.

    Args:
        blocks: the 1-based numbers of the L MoE blocks.
        num_experts: E.
    """

    def __init__(self, blocks: Sequence[int], num_experts: int):
        self.blocks = list(blocks)
        self.num_experts = num_experts
        self.changed = np.zeros(len(self.blocks), dtype=np.int64)
        self.frames = 0
        self.utterances = 0
        self.length_mismatches = 0
        self.clean_counts = np.zeros((len(self.blocks), num_experts), dtype=np.int64)
        self.noisy_counts = np.zeros((len(self.blocks), num_experts), dtype=np.int64)

    def add(self, clean: np.ndarray, noisy: np.ndarray) -> None:
        """(L, T) and (L, T') experts of one utterance; frames are compared up to min(T, T')."""
        length = min(clean.shape[1], noisy.shape[1])
        if clean.shape[1] != noisy.shape[1]:
            self.length_mismatches += 1
        clean, noisy = clean[:, :length], noisy[:, :length]
        self.changed += (clean != noisy).sum(1)
        self.frames += length
        self.utterances += 1
        self.clean_counts += layer_counts(clean, self.num_experts)
        self.noisy_counts += layer_counts(noisy, self.num_experts)

    def report(self, clean_name: str, noisy_name: str) -> dict:
        """``changed``: per layer, the share of frames whose expert differs; ``chance``: the
        share two independent draws from the clean and noisy usage would differ."""
        chance = 1 - (_usage(self.clean_counts) * _usage(self.noisy_counts)).sum(1)
        return {
            "clean": clean_name,
            "noisy": noisy_name,
            "utterances": self.utterances,
            "frames": self.frames,
            "length_mismatches": self.length_mismatches,
            "blocks": self.blocks,
            "changed": _rounded(self.changed / max(self.frames, 1)),
            "mean_changed": round(float((self.changed / max(self.frames, 1)).mean()), 4) if self.blocks else None,
            "chance": _rounded(chance),
        }
