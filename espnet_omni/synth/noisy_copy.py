"""Noise for the data: a noisy copy of a data dir (the same utterances under the same ids, with
noise added) and a set of noise recordings for ESPnet's training-time noise augmentation.

Routing under noise (``analyze_routing --noise_pair``) compares a model's expert choices on
the two, frame by frame; the copy keeps every utterance's length, so frames pair one to one.
"""

import shutil
import zlib
from pathlib import Path
from typing import Dict, Iterator, Tuple

import numpy as np
import soundfile

from espnet_omni.corpora.prepare import replace_dir
from espnet_omni.data.kaldi_segments import SegmentsReader, read_wav_scp
from espnet_omni.synth import augment

TABLES = ("text", "utt2spk", "spk2utt")


def _utterances(data_dir: Path) -> Iterator[Tuple[str, int, np.ndarray]]:
    """(utt id, sample rate, float samples) of a data dir, mono, in its order."""
    if (data_dir / "segments").exists():
        reader = SegmentsReader(data_dir / "segments", dtype="float64")
        try:
            for key in reader:
                rate, samples = reader[key]
                yield key, rate, samples if samples.ndim == 1 else samples[:, 0]
        finally:
            reader.close()
        return
    for key, path in read_wav_scp(data_dir / "wav.scp").items():
        samples, rate = soundfile.read(path, dtype="float64", always_2d=True)
        yield key, rate, samples[:, 0]


NOISE_COLOURS = ("white", "pink", "brown")


def write_noisy_copy(src: Path, dst: Path, snr_db: float, colour: str = "pink", seed: int = 0) -> int:
    """Write ``dst``: ``src``'s utterances with ``colour`` noise (white, pink, brown) at
    ``snr_db`` dB, as FLAC files in ``dst/audio``, and ``src``'s text, utt2spk and spk2utt.

    The noise of an utterance is drawn from ``seed`` and its id, so a copy is reproducible.
    ``dst`` is replaced only once the copy is complete. Returns the number of utterances.
    """
    if colour not in NOISE_COLOURS:
        raise ValueError(f"noise colour must be white, pink or brown, got '{colour}'")
    work = dst.parent / f".{dst.name}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    (work / "audio").mkdir(parents=True)
    scp: Dict[str, str] = {}
    for key, rate, speech in _utterances(src):
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        noisy = augment.mix_at_snr(speech, augment.coloured_noise(rng, speech.size, colour), snr_db)
        path = work / "audio" / f"{key}.flac"
        soundfile.write(path, augment.to_int16(noisy), rate, subtype="PCM_16")
        scp[key] = str((dst / "audio" / path.name).resolve())
    (work / "wav.scp").write_text("".join(f"{key} {scp[key]}\n" for key in sorted(scp)))
    for table in TABLES:
        if (src / table).exists():
            shutil.copyfile(src / table, work / table)
    replace_dir(work, dst)
    return len(scp)


def write_noise_set(dst: Path, colours=NOISE_COLOURS, recordings: int = 4, seconds: float = 30.0,
                    rate: int = 16000, seed: int = 0) -> int:
    """Write ``dst/wav.scp`` (``<id> <path>``, ESPnet's ``noise_scp``) and ``recordings`` FLAC
    files of ``seconds`` per colour, peak-normalised to -6 dBFS (the preprocessor scales noise
    to the SNR it draws). Reproducible from ``seed``; ``dst`` is replaced only once complete.
    Returns the number of recordings."""
    unknown = [c for c in colours if c not in NOISE_COLOURS]
    if unknown or not colours:
        raise ValueError(f"noise colours must be among {NOISE_COLOURS}, got {list(colours)}")
    work = dst.parent / f".{dst.name}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    (work / "audio").mkdir(parents=True)
    lines = []
    for colour in colours:
        for n in range(recordings):
            rng = np.random.default_rng([seed, zlib.crc32(colour.encode()), n])
            noise = augment.coloured_noise(rng, int(seconds * rate), colour)
            noise = 0.5 * noise / np.abs(noise).max()
            key = f"{colour}{n:02d}"
            soundfile.write(work / "audio" / f"{key}.flac", augment.to_int16(noise), rate, subtype="PCM_16")
            lines.append(f"{key} {(dst / 'audio' / f'{key}.flac').resolve()}\n")
    (work / "wav.scp").write_text("".join(lines))
    replace_dir(work, dst)
    return len(lines)
