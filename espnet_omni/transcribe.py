"""Transcribe audio files with a trained or packed CTC model (``espnet_omni.bin.transcribe``).

Two decoders:

* :class:`GreedyDecoder`: best-path CTC over padded batches of segments (no LM, 1-best), as
  the recipe's ``asr_inference_ctc``;
* :class:`BeamDecoder`: ESPnet's ``Speech2Text``, CTC prefix beam search with the model's
  packed LM fused or not, n-best; one segment at a time, as ESPnet decodes.

:func:`transcribe` streams the files' segments (:mod:`espnet_omni.audio_input`) through a
decoder ``batch_size`` segments at a time, across files, and hands each file's result on as soon
as its last segment is decoded, in the order of the files: memory holds one batch of audio and
the texts of files not yet handed on. A file that cannot be read or decoded is handed on with
its error; the others go on.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_omni.audio_input import AudioInputError, Segment, Source, read_segments

# (text, score) of each hypothesis, best first; score None for the best path.
NBest = List[Tuple[str, Optional[float]]]


@dataclass
class FileResult:
    """The transcript of one file: its segments' start and end times and n-best lists."""

    source: Source
    segments: List[Tuple[float, float, NBest]] = field(default_factory=list)
    error: Optional[str] = None
    seconds: float = 0.0  # decoding time of its segments

    @property
    def text(self) -> str:
        return " ".join(nbest[0][0].strip() for _, _, nbest in self.segments if nbest and nbest[0][0].strip())

    @property
    def duration(self) -> float:
        return self.segments[-1][1] if self.segments else 0.0

    def as_json(self) -> dict:
        out = {"utt": self.source.utt_id, "path": self.source.path}
        if self.error:
            return {**out, "error": self.error}
        segments = []
        for start, end, nbest in self.segments:
            entry = {"start": round(start, 3), "end": round(end, 3), "text": nbest[0][0]}
            if len(nbest) > 1:
                entry["nbest"] = [{"text": t, "score": s} for t, s in nbest]
            segments.append(entry)
        return {**out, "text": self.text, "duration": round(self.duration, 3),
                "decode_seconds": round(self.seconds, 3), "segments": segments}


def model_rate(train_args) -> int:
    """The sampling rate the model's frontend expects (ESPnet's default frontend: 16 kHz)."""
    if getattr(train_args, "frontend", None) is None:
        raise ValueError("the model has no frontend (it was trained on features, not audio)")
    fs = (getattr(train_args, "frontend_conf", None) or {}).get("fs", 16000)
    if isinstance(fs, str):
        import humanfriendly

        fs = humanfriendly.parse_size(fs)
    return int(fs)


class GreedyDecoder:
    """Best-path CTC of padded batches (no LM, 1-best)."""

    def __init__(self, config: Path, model_file: Path, device: str):
        from espnet_omni.greedy_ctc import load_ctc_model

        self.model, self.train_args, self.tokenizer, self.converter = load_ctc_model(
            str(config), str(model_file), device
        )
        self.device = device
        self.rate = model_rate(self.train_args)

    @torch.no_grad()
    def __call__(self, segments: Sequence[np.ndarray]) -> List[NBest]:
        from espnet_omni.greedy_ctc import greedy_ctc, ids_to_text

        lengths = torch.tensor([s.size for s in segments])
        speech = torch.zeros(len(segments), int(lengths.max()))
        for i, samples in enumerate(segments):
            speech[i, : samples.size] = torch.from_numpy(samples)
        encoded, encoded_lengths = self.model.encode(speech.to(self.device), lengths.to(self.device))
        if isinstance(encoded, tuple):  # intermediate CTC outputs
            encoded = encoded[0]
        paths = greedy_ctc(self.model.ctc.log_softmax(encoded), encoded_lengths, self.model.blank_id)
        return [[(ids_to_text(ids, self.tokenizer, self.converter)[0], None)] for ids in paths]


class BeamDecoder:
    """ESPnet's Speech2Text: CTC prefix beam search, with the packed LM when given."""

    def __init__(self, config: Path, model_file: Path, device: str, lm_config: Optional[Path] = None,
                 lm_file: Optional[Path] = None, beam_size: int = 5, lm_weight: float = 1.5,
                 penalty: float = 0.5, nbest: int = 1):
        from espnet2.bin.asr_inference import Speech2Text

        import espnet_omni  # noqa: F401  (registers the classes)

        self.speech2text = Speech2Text(
            asr_train_config=str(config), asr_model_file=str(model_file),
            lm_train_config=str(lm_config) if lm_config else None,
            lm_file=str(lm_file) if lm_file else None, device=device, beam_size=beam_size,
            ctc_weight=1.0, lm_weight=lm_weight if lm_config else 0.0, penalty=penalty,
            nbest=nbest, maxlenratio=0.0, minlenratio=0.0,
        )
        self.rate = model_rate(self.speech2text.asr_train_args)

    @torch.no_grad()
    def __call__(self, segments: Sequence[np.ndarray]) -> List[NBest]:
        out = []
        for samples in segments:
            hyps = self.speech2text(samples)
            out.append([(text or "", float(hyp.score)) for text, _, _, hyp in hyps])
        return out


def transcribe(
    sources: Sequence[Source],
    decoder: Callable[[Sequence[np.ndarray]], List[NBest]],
    rate: int,
    batch_size: int = 16,
    max_seconds: float = 30.0,
) -> Iterator[FileResult]:
    """Each file's result, in the order of ``sources``, as soon as it is complete."""
    results: Dict[int, FileResult] = {i: FileResult(s) for i, s in enumerate(sources)}
    finished: set = set()  # files whose segments have all been read
    outstanding: Dict[int, int] = {}  # file -> segments read but not decoded
    batch: List[Tuple[int, Segment]] = []
    next_out = 0

    def decode_batch() -> None:
        if not batch:
            return
        start = time.perf_counter()
        try:
            nbests = decoder([segment.samples for _, segment in batch])
        except Exception as err:  # a batch that fails: try its segments one by one
            if len(batch) == 1:
                index, _ = batch[0]
                results[index].error = results[index].error or f"{sources[index].path}: decoding failed ({err})"
                nbests = [[("", None)]]
            else:
                saved = list(batch)
                batch.clear()
                for item in saved:
                    batch.append(item)
                    decode_batch()
                return
        share = (time.perf_counter() - start) / len(batch)
        for (index, segment), nbest in zip(batch, nbests):
            results[index].segments.append((segment.start, segment.end, nbest))
            results[index].seconds += share
            outstanding[index] -= 1
        batch.clear()

    def ready() -> Iterator[FileResult]:
        nonlocal next_out
        while next_out in finished and outstanding.get(next_out, 0) == 0:
            result = results.pop(next_out)
            if result.error:
                result.segments = []
            yield result
            next_out += 1

    for index, source in enumerate(sources):
        outstanding[index] = 0
        try:
            for segment in read_segments(source.path, rate, max_seconds):
                outstanding[index] += 1
                batch.append((index, segment))
                if len(batch) >= batch_size:
                    decode_batch()
                    yield from ready()
        except AudioInputError as err:
            results[index].error = str(err)
            logging.debug(f"{source.path}: {err}")
        finished.add(index)
        yield from ready()
    decode_batch()
    yield from ready()


def write_text(result: FileResult, out) -> None:
    """Kaldi text: ``utt hypothesis`` (nothing for a file that failed)."""
    if not result.error:
        out.write(f"{result.source.utt_id} {result.text}".rstrip() + "\n")
