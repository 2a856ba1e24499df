"""Run trained models over data dirs and count their routing (``analyze_routing``).

A model is an ESPnet experiment folder (``config.yaml`` and a model file) or a packed model
(a zip made by ``espnet2.bin.pack``, a URL or a model-zoo name), found or unpacked by
:func:`espnet_omni.recipe.packed_model.resolve_model_files`. Data dirs are Kaldi-style (``wav.scp``, or ``segments``
over recordings), read in batches by ESPnet's streaming iterator as decoding reads them. Each
batch goes through the model's ``encode`` once, with the encoder's routing collected; the
routing of its real frames and the greedy CTC label of each frame feed
:class:`~espnet_omni.analysis.routing_counts.RoutingCounts`, and the batch is dropped.
"""

import json
import logging
import os
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_omni.analysis.dependence import MEASURE_DEFINITIONS
from espnet_omni.analysis.routing_counts import BatchRouting, NoisePairCounts, RoutingCounts
from espnet_omni.recipe.data_dir import DataDirError, iter_table
from espnet_omni.recipe.packed_model import model_name, resolve_model_files

REPORT_FORMAT = 1

class RoutingAnalysisError(ValueError):
    """A model or data dir that cannot be analysed, with what to do about it."""


@dataclass
class DataSet:
    """A data dir to run, its utterances (a subset when asked) and their speakers."""

    name: str
    path: Path
    keys: List[str]
    speakers: Optional[Dict[str, str]]

    @property
    def speech(self) -> Tuple[str, str, str]:
        """ESPnet's (path, name, type) of the dir's audio."""
        if (self.path / "segments").exists():
            return str(self.path / "segments"), "speech", "kaldi_segments"
        return str(self.path / "wav.scp"), "speech", "sound"


def load_data_set(spec: str, max_utts: Optional[int] = None, seed: int = 0) -> DataSet:
    """A data dir given as ``path`` or ``name=path`` (name: the dir's name by default).

    With ``max_utts``, a random subset of that many utterances (drawn with ``seed``, kept in the
    dir's order). Raises RoutingAnalysisError for a dir without audio or utterances, and
    DataDirError (naming file and line) for a malformed table.
    """
    name, _, path = spec.rpartition("=")
    path = Path(path)
    name = name or path.name
    ids = path / "segments" if (path / "segments").exists() else path / "wav.scp"
    if not ids.exists():
        raise RoutingAnalysisError(f"{path}: not a data dir (no wav.scp or segments)")
    keys = [entry.key for entry in iter_table(ids)]
    if not keys:
        raise RoutingAnalysisError(f"{ids}: no utterance")
    if max_utts is not None and len(keys) > max_utts:
        chosen = set(random.Random(seed).sample(range(len(keys)), max_utts))
        keys = [key for i, key in enumerate(keys) if i in chosen]
    speakers = None
    if (path / "utt2spk").exists():
        wanted = set(keys)
        speakers = {e.key: e.value for e in iter_table(path / "utt2spk") if e.key in wanted}
        missing = wanted - speakers.keys()
        if missing:
            raise DataDirError(f"{path / 'utt2spk'}: no speaker for {sorted(missing)[0]} (and {len(missing) - 1} more)")
    return DataSet(name, path, keys, speakers)


@dataclass
class LoadedModel:
    """A model ready to run, with what routing.json says of it."""

    name: str
    source: str
    model: torch.nn.Module
    train_args: object  # the training run's argparse.Namespace

    @property
    def encoder(self) -> str:
        return self.train_args.encoder

    @property
    def moe_blocks(self) -> List[int]:
        return list(getattr(self.model.encoder, "moe_blocks", []) or [])


def load_model(source: str, model_file: Optional[str], unpack_dir: Path, device: str) -> LoadedModel:
    """Build the ESPnet ASR model of ``source`` in eval mode on ``device``."""
    from espnet2.tasks.asr import ASRTask

    import espnet_omni  # noqa: F401  (registers the encoders)

    files = resolve_model_files(source, model_file, unpack_dir)
    model, train_args = ASRTask.build_model_from_file(str(files.config), str(files.model), device)
    model.eval()
    logging.info(f"{source}: {files.model} ({train_args.encoder} encoder)")
    return LoadedModel(model_name(source), source, model, train_args)


@torch.no_grad()
def route_batch(model: torch.nn.Module, keys: Sequence[str], speech: torch.Tensor,
                speech_lengths: torch.Tensor) -> BatchRouting:
    """Encode a padded batch (B, S) and return its real frames' routing and CTC blanks."""
    with model.encoder.collect_routing() as trace:
        encoded, encoded_lengths = model.encode(speech, speech_lengths)
    if isinstance(encoded, tuple):  # intermediate CTC outputs
        encoded = encoded[0]
    real = trace.outputs[0].real_tokens()  # (B * T',) batch-major, as the encoder output
    experts, chosen, entropies, prob_sums = [], [], [], []
    for routing in trace.outputs:
        probs = routing.probs[real]
        top = routing.expert_index[real, :1]
        experts.append(top[:, 0])
        chosen.append(probs.gather(1, top)[:, 0])
        entropies.append(-torch.xlogy(probs, probs).sum(-1))
        prob_sums.append(probs.sum(0))
    blank = (model.ctc.argmax(encoded) == model.blank_id).reshape(-1)[real]
    return BatchRouting(
        keys=list(keys),
        lengths=encoded_lengths.cpu().numpy(),
        experts=torch.stack(experts).cpu().numpy(),
        chosen_prob=torch.stack(chosen).double().cpu().numpy(),
        entropy=torch.stack(entropies).double().cpu().numpy(),
        prob_sum=torch.stack(prob_sums).double().cpu().numpy(),
        blank=blank.cpu().numpy(),
    )


def iter_batches(model: LoadedModel, data: DataSet, batch_size: int, device: str,
                 num_workers: int, work_dir: Path) -> Iterator[BatchRouting]:
    """The routing of ``data``'s utterances, ``batch_size`` at a time, in the dir's order."""
    from espnet2.tasks.asr import ASRTask
    from espnet2.torch_utils.device_funcs import to_device

    handle, name = tempfile.mkstemp(prefix=f"{data.name}.", suffix=".keys", dir=work_dir)
    with os.fdopen(handle, "w") as f:
        f.write("".join(f"{key}\n" for key in data.keys))
    key_file = Path(name)
    loader = ASRTask.build_streaming_iterator(
        [data.speech], preprocess_fn=None,
        collate_fn=ASRTask.build_collate_fn(model.train_args, False),
        key_file=str(key_file), batch_size=batch_size, dtype="float32", num_workers=num_workers,
        inference=True,
    )
    try:
        for keys, batch in loader:
            batch = to_device(batch, device)
            yield route_batch(model.model, keys, batch["speech"], batch["speech_lengths"])
    finally:
        key_file.unlink()


def analyze_model(
    model: LoadedModel,
    data_sets: Sequence[DataSet],
    reference: Optional[DataSet] = None,
    noise_pairs: Sequence[Tuple[DataSet, DataSet]] = (),
    batch_size: int = 16,
    device: str = "cpu",
    num_workers: int = 1,
    max_paths: int = 200_000,
    example_utt: Optional[str] = None,
    work_dir: Optional[Path] = None,
) -> dict:
    """The routing.json entry of one MoE model over ``data_sets``.

    Agreement, per-layer statistics, paths, CTC blanks and the example are pooled over
    ``data_sets``; every set's (and speaker's) usage is compared with ``reference``'s (the pooled
    usage of the sets when there is none). ``noise_pairs`` are (clean, noisy) dirs whose
    utterances pair by id: only the change of expert between them is counted.
    """
    blocks = model.moe_blocks
    encoder = model.model.encoder
    num_experts = encoder.routers[0].num_experts
    counts = RoutingCounts(blocks, num_experts, max_paths=max_paths, example_utt=example_utt)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        if reference is not None:
            for batch in _timed(model, reference, iter_batches(model, reference, batch_size, device, num_workers, tmp)):
                counts.add_reference(reference.name, batch)
        for data in data_sets:
            for batch in _timed(model, data, iter_batches(model, data, batch_size, device, num_workers, tmp)):
                speakers = [data.speakers[k] for k in batch.keys] if data.speakers else None
                counts.add(data.name, batch, speakers)
        noise = [_compare_pair(model, clean, noisy, batch_size, device, num_workers, tmp)
                 for clean, noisy in noise_pairs]
    if example_utt is not None and counts.example is None:
        logging.warning(f"{model.name}: --example_utt {example_utt} is in none of the data dirs")
    entry = {
        "model": model.source,
        "encoder": model.encoder,
        "shared_router": len(encoder.routers) == 1 and len(blocks) > 1,
    }
    entry.update(counts.report())
    entry["noise"] = noise
    return entry


def _compare_pair(model: LoadedModel, clean: DataSet, noisy: DataSet, batch_size: int, device: str,
                  num_workers: int, work_dir: Path) -> dict:
    noisy_keys = set(noisy.keys)
    keys = [key for key in clean.keys if key in noisy_keys]
    if not keys:
        raise RoutingAnalysisError(
            f"{clean.path} and {noisy.path} have no utterance id in common: a noise pair is the "
            "same utterances clean and noisy, under the same ids"
        )
    clean = DataSet(clean.name, clean.path, keys, None)
    noisy = DataSet(noisy.name, noisy.path, keys, None)
    pair = NoisePairCounts(model.moe_blocks, model.model.encoder.routers[0].num_experts)
    batches = zip(iter_batches(model, clean, batch_size, device, num_workers, work_dir),
                  iter_batches(model, noisy, batch_size, device, num_workers, work_dir))
    for a, b in batches:
        start_a = start_b = 0
        for length_a, length_b in zip(a.lengths.tolist(), b.lengths.tolist()):
            pair.add(a.experts[:, start_a:start_a + length_a], b.experts[:, start_b:start_b + length_b])
            start_a, start_b = start_a + length_a, start_b + length_b
    return pair.report(clean.name, noisy.name)


def _timed(model: LoadedModel, data: DataSet, batches: Iterator[BatchRouting]) -> Iterator[BatchRouting]:
    start, frames = time.perf_counter(), 0
    for batch in batches:
        frames += int(batch.lengths.sum())
        yield batch
    seconds = time.perf_counter() - start
    logging.info(f"{model.name} on {data.name}: {len(data.keys)} utterances, {frames} encoder "
                 f"frames in {seconds:.1f} s")


def analyze(
    sources: Sequence[str],
    data_specs: Sequence[str],
    reference_spec: Optional[str] = None,
    noise_pair_specs: Sequence[Tuple[str, str]] = (),
    model_file: Optional[str] = None,
    max_utts: Optional[int] = None,
    reference_max_utts: Optional[int] = None,
    work_dir: Optional[Path] = None,
    **options,
) -> dict:
    """routing.json for every model of ``sources`` (models without a MoE block are listed under
    ``skipped``); ``options`` go to :func:`analyze_model`."""
    data_sets = [load_data_set(spec, max_utts) for spec in data_specs]
    names = [d.name for d in data_sets]
    if len(set(names)) != len(names):
        raise RoutingAnalysisError(f"data dirs share a name: {names}; name them with name=path")
    reference = load_data_set(reference_spec, reference_max_utts) if reference_spec else None
    pairs = [(load_data_set(c, max_utts), load_data_set(n)) for c, n in noise_pair_specs]
    names = [model_name(s) for s in sources]
    if len(set(names)) != len(names):
        raise RoutingAnalysisError(f"models share a name: {names}")
    device = options.get("device", "cpu")
    report = {"format": REPORT_FORMAT, "measures": MEASURE_DEFINITIONS, "models": {}, "skipped": {}}
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        for source in sources:
            loaded = load_model(source, model_file, Path(tmp) / model_name(source), device)
            if not loaded.moe_blocks:
                logging.info(f"{loaded.name}: no MoE block ({loaded.encoder} encoder), nothing to analyse")
                report["skipped"][loaded.name] = f"{loaded.encoder} encoder: no MoE block"
                continue
            report["models"][loaded.name] = analyze_model(
                loaded, data_sets, reference, pairs, work_dir=Path(tmp), **options
            )
            del loaded
    return report


def as_json_ready(value):
    """numpy scalars and arrays as Python numbers and lists, for json.dump."""
    if isinstance(value, dict):
        return {k: as_json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def report_json(report: dict) -> str:
    """routing.json's text: indented, each innermost list of numbers on one line."""
    text = json.dumps(as_json_ready(report), indent=1)
    return re.sub(r"\[\s*([^\[\]{}\"]*?)\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"
