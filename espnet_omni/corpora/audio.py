"""Reading corpus audio at 16 kHz mono, whatever the format it ships in.

FLAC, WAV, Ogg/Vorbis, MP3 and plain NIST SPHERE (PCM, u-law) are read by libsndfile
(``soundfile``); SPHERE files with Shorten compression (WSJ's ``.wv1``, Hub5'00's ``.sph``) are
decoded by ``desphere`` (with its Rust accelerator ``desphere-native`` when installed), as
``sph2pipe`` would. Reads seek to the segment, so a long recording is never held whole, except
Shorten files, whose stream can only be decoded from the start (one file at a time).
"""

import io
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile

from espnet_omni.extras import require_extra

SAMPLE_RATE = 16000

_SPHERE_MAGIC = b"NIST_1A\n"


class AudioError(ValueError):
    """Audio that cannot be read as asked, with its path."""


def sphere_header(path: Path) -> Optional[dict]:
    """The header fields of a NIST SPHERE file, or None when the file is not SPHERE."""
    with open(path, "rb") as f:
        if f.read(8) != _SPHERE_MAGIC:
            return None
        size = int(f.read(8).strip())
        lines = f.read(size - 16).decode("ascii", errors="replace").splitlines()
    fields = {}
    for line in lines:
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1].startswith("-"):
            fields[parts[0]] = parts[2].strip()
        if line.strip() == "end_head":
            break
    return fields


class AudioFile:
    """One recording opened for reading segments of it.

    ``read(start, end, channel)`` returns float32 samples of shape (T,) at 16 kHz: the
    channel asked for, or the mean of all channels when ``channel`` is None.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        header = sphere_header(self.path)
        shorten = header is not None and "shorten" in header.get("sample_coding", "")
        if shorten:
            transcode_bytes = require_extra(
                "desphere", "Reading Shorten-compressed NIST SPHERE audio (WSJ, Hub5'00)"
            ).transcode_bytes
        try:
            if shorten:
                # Decoded once into WAV bytes: a Shorten stream has no seek points.
                self._file = soundfile.SoundFile(io.BytesIO(transcode_bytes(self.path.read_bytes())))
            else:
                self._file = soundfile.SoundFile(self.path)
        except Exception as err:  # soundfile.LibsndfileError, desphere.DesphereError, ...
            raise AudioError(f"{self.path}: cannot read audio ({err})") from err
        self.sample_rate = self._file.samplerate
        self.channels = self._file.channels
        self.frames = self._file.frames

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def read(self, start: float = 0.0, end: Optional[float] = None, channel: Optional[int] = None) -> np.ndarray:
        if channel is not None and not 0 <= channel < self.channels:
            raise AudioError(f"{self.path}: channel {channel} asked for, the file has {self.channels}")
        first = int(round(start * self.sample_rate))
        last = self.frames if end is None else min(int(round(end * self.sample_rate)), self.frames)
        if first >= last:
            raise AudioError(
                f"{self.path}: segment {start:.2f}-{end if end is None else round(end, 2)} s is empty "
                f"or past the end of the recording ({self.duration:.2f} s)"
            )
        self._file.seek(first)
        samples = self._file.read(last - first, dtype="float32", always_2d=True)
        mono = samples[:, channel] if channel is not None else samples.mean(axis=1)
        if self.sample_rate != SAMPLE_RATE:
            soxr = require_extra("soxr", "Resampling corpus audio to 16 kHz")
            mono = soxr.resample(mono, self.sample_rate, SAMPLE_RATE, quality="HQ")
        return np.ascontiguousarray(mono, dtype=np.float32)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "AudioFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
