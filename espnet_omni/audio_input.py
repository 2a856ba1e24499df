"""Audio files as a model hears them: listed from paths, folders or a wav.scp, read in blocks,
downmixed to mono, cut at silences into bounded segments and resampled to the model's rate.

A file of any length is read ``max_seconds`` at a time: each segment ends at the quietest
50 ms of its last ``search_seconds`` (a pause between words where there is one), so memory
holds one segment, whatever the file's length. A last piece shorter than ``min_seconds`` joins
the segment before it.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np
import soundfile

# A file whose every sample lies below this (dBFS) holds no speech to transcribe.
SILENCE_DBFS = -60.0
WINDOW_SECONDS = 0.05


class AudioInputError(ValueError):
    """A file that cannot be transcribed: missing, unreadable, empty or silent."""


@dataclass
class Source:
    """An audio file and the utterance id its transcript gets."""

    utt_id: str
    path: str


@dataclass
class Segment:
    """Mono float32 samples at the model's rate of [start, end) seconds of a file."""

    start: float
    end: float
    samples: np.ndarray


def audio_suffixes() -> List[str]:
    """File name endings of the formats soundfile reads here (lower case, with the dot)."""
    suffixes = {f".{name.lower()}" for name in soundfile.available_formats()}
    aliases = {".aiff": ".aif", ".ogg": ".opus", ".wav": ".wave", ".nist": ".sph"}
    return sorted(suffixes | {alias for name, alias in aliases.items() if name in suffixes})


def list_sources(inputs: Sequence[str]) -> List[Source]:
    """The files of ``inputs``: audio files, folders (their audio files, recursively, ids from
    the paths inside the folder) and Kaldi ``wav.scp`` files (``utt path`` lines). Ids are made
    unique with a ``-2``, ``-3``, ... suffix. A path that does not exist is kept, to be reported
    when it is read; a wav.scp with a command instead of a path raises, naming its line.
    """
    from espnet_omni.data.kaldi_segments import read_wav_scp

    suffixes = set(audio_suffixes())
    found: List[Source] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes):
                relative = file.relative_to(path).with_suffix("")
                found.append(Source("_".join(relative.parts).replace(" ", "_"), str(file)))
        elif path.suffix == ".scp" and path.is_file():
            found += [Source(key, value) for key, value in read_wav_scp(path).items()]
        else:
            found.append(Source(path.stem.replace(" ", "_") or path.name, str(path)))
    seen: dict = {}
    for source in found:
        count = seen.get(source.utt_id, 0) + 1
        seen[source.utt_id] = count
        if count > 1:
            source.utt_id = f"{source.utt_id}-{count}"
    return found


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy), float32."""
    if rate_in == rate_out:
        return samples.astype(np.float32)
    from scipy.signal import resample_poly

    step = math.gcd(rate_in, rate_out)
    return resample_poly(samples, rate_out // step, rate_in // step).astype(np.float32)


def _quietest_cut(samples: np.ndarray, rate: int, search: int) -> int:
    """The sample index, within the last ``search`` samples, at the centre of the 50 ms window
    of least energy."""
    window = max(1, int(WINDOW_SECONDS * rate))
    start = max(0, samples.size - search)
    region = samples[start:]
    if region.size <= window:
        return samples.size
    energy = np.convolve(region.astype(np.float64) ** 2, np.ones(window), mode="valid")
    return start + int(np.argmin(energy)) + window // 2


def read_segments(
    path: str,
    rate: int,
    max_seconds: float = 30.0,
    search_seconds: float = 5.0,
    min_seconds: float = 0.5,
) -> Iterator[Segment]:
    """The segments of the file at ``path`` at ``rate`` Hz, in order.

    Raises AudioInputError for a missing, unreadable, empty or silent file (silent: every sample
    below -60 dBFS; raised after its segments, which are then to be discarded).
    """
    if not Path(path).is_file():
        raise AudioInputError(f"{path}: no such file")
    try:
        audio = soundfile.SoundFile(path)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise AudioInputError(f"{path}: unreadable ({err})") from err
    with audio:
        native = audio.samplerate
        if audio.frames == 0:
            raise AudioInputError(f"{path}: empty (no samples)")
        longest = int(max_seconds * native)
        search = int(min(search_seconds, max_seconds / 2) * native)
        buffer = np.zeros(0, dtype=np.float32)
        offset = 0  # samples of the file before the buffer
        held: Optional[Segment] = None
        peak = 0.0
        while True:
            block = audio.read(longest - buffer.size, dtype="float32", always_2d=True)
            if block.size:
                mono = block.mean(axis=1)
                peak = max(peak, float(np.abs(mono).max()))
                buffer = np.concatenate([buffer, mono])
            if buffer.size < longest and block.shape[0] > 0:
                continue
            at_end = buffer.size < longest
            cut = buffer.size if at_end else _quietest_cut(buffer, native, search)
            piece = Segment(offset / native, (offset + cut) / native, buffer[:cut])
            if held is not None and piece.samples.size < min_seconds * native:
                held = Segment(held.start, piece.end, np.concatenate([held.samples, piece.samples]))
            else:
                if held is not None:
                    yield Segment(held.start, held.end, resample(held.samples, native, rate))
                held = piece
            buffer, offset = buffer[cut:], offset + cut
            if at_end:
                break
        if held is not None and held.samples.size:
            yield Segment(held.start, held.end, resample(held.samples, native, rate))
    if peak == 0.0 or 20 * math.log10(peak) < SILENCE_DBFS:
        level = "-inf" if peak == 0.0 else f"{20 * math.log10(peak):.0f}"
        raise AudioInputError(f"{path}: silent (peak {level} dBFS)")
