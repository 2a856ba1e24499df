"""Whether an audio file can be training input: present, decodable to its end, non-empty, at the
recipe's sample rate and mono.

Two depths (``check``):

``header``
    the header (rate, channels, length), a WAV's declared data size against the bytes present
    (libsndfile silently shortens a cut WAV), and a decode of the last samples (a FLAC cut
    mid-file keeps its full length in its header; decoding its end fails). A few KB read per file.
``full``
    every sample decoded, which also finds damage inside a file whose end is intact (a FLAC with
    garbled frames); it reads the whole corpus.

Problems are :class:`AudioProblem`; ``skippable`` ones are files that cannot be read at all, which a
large corpus may have a few of, as opposed to a sample rate or a channel count the recipe refuses.
"""

import argparse
import struct
from pathlib import Path

import soundfile

SAMPLE_RATE = 16000
CHECKS = ("header", "full")
# Samples decoded at the end of a file in a header check (one FLAC block or less).
TAIL_FRAMES = 4096
# Samples per read in a full check: bounds its memory whatever the recording's length.
BLOCK_FRAMES = 16000 * 60
# WAV data sizes that streaming writers leave in place of the real one.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
# libsndfile raises LibsndfileError (a RuntimeError); unreadable paths raise OSError.
_READ_ERRORS = (RuntimeError, OSError, ValueError)


class AudioProblem(ValueError):
    """Why an audio file cannot be training input (no path in the message: the caller names it)."""

    def __init__(self, reason: str, skippable: bool):
        super().__init__(reason)
        self.reason = reason
        self.skippable = skippable


def audio_seconds(path: str, fs: int = SAMPLE_RATE, check: str = "header") -> float:
    """The duration of an audio file, after the checks of ``check`` ("header" or "full").

    Raises:
        AudioProblem: skippable for a missing, empty, unreadable, truncated or zero-length file;
        not skippable for a sample rate other than ``fs`` or more than one channel.
    """
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got '{check}'")
    file = Path(path)
    if not file.exists():
        folder = "" if file.parent.is_dir() else f" (nor does its folder {file.parent})"
        raise AudioProblem(f"does not exist{folder}", skippable=True)
    if not file.is_file():
        raise AudioProblem("is not a file", skippable=True)
    size = file.stat().st_size
    if size == 0:
        raise AudioProblem("is empty (0 bytes)", skippable=True)
    try:
        with soundfile.SoundFile(file) as f:
            rate, channels, frames = f.samplerate, f.channels, f.frames
            _check_layout(rate, channels, fs)
            if frames == 0:
                raise AudioProblem("has no samples (zero-length audio)", skippable=True)
            _check_wav_size(file, size)
            if check == "full":
                _decode_all(f, frames)
            else:
                _decode_tail(f, frames)
    except AudioProblem:
        raise
    except _READ_ERRORS as err:
        raise AudioProblem(f"cannot be read ({err})", skippable=True) from None
    return frames / rate


def _check_layout(rate: int, channels: int, fs: int) -> None:
    if rate != fs:
        raise AudioProblem(
            f"is {rate} Hz, the recipe expects {fs} Hz (--fs): refused, not resampled; resample the "
            f"corpus first (e.g. sox in.flac -r {fs} out.flac) or prepare its data dir at {fs} Hz",
            skippable=False,
        )
    if channels != 1:
        raise AudioProblem(
            f"has {channels} channels, the recipe takes mono audio: refused, not mixed down; keep "
            f"one channel first (e.g. sox in.wav out.wav remix 1)",
            skippable=False,
        )


def _check_wav_size(file: Path, size: int) -> None:
    """A RIFF/WAVE file's data chunk holds the bytes its header declares (other formats: no-op)."""
    with open(file, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return
        order = "<" if head[:4] == b"RIFF" else ">"
        position = 12
        for _ in range(64):  # chunks before the data: a handful in practice
            f.seek(position)
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            declared = struct.unpack(order + "I", chunk[4:])[0]
            if chunk[:4] == b"data":
                present = size - position - 8
                if declared not in _UNKNOWN_SIZES and declared > present:
                    raise AudioProblem(
                        f"is truncated: its header declares {declared} bytes of samples, the file "
                        f"holds {present}",
                        skippable=True,
                    )
                return
            position += 8 + declared + (declared & 1)


def _decode_tail(f: soundfile.SoundFile, frames: int) -> None:
    wanted = min(frames, TAIL_FRAMES)
    try:
        f.seek(frames - wanted)
        got = len(f.read(wanted, dtype="int16"))
    except _READ_ERRORS as err:
        raise AudioProblem(f"is truncated or corrupt: its last samples do not decode ({err})",
                           skippable=True) from None
    if got < wanted:
        raise AudioProblem(f"is truncated: its last {wanted - got} samples do not decode", skippable=True)


def _decode_all(f: soundfile.SoundFile, frames: int) -> None:
    decoded = 0
    try:
        while decoded < frames:
            block = len(f.read(min(BLOCK_FRAMES, frames - decoded), dtype="int16"))
            if block == 0:
                break
            decoded += block
    except _READ_ERRORS as err:
        raise AudioProblem(f"is corrupt: it does not decode to its end ({err})", skippable=True) from None
    if decoded < frames:
        raise AudioProblem(f"is truncated: {decoded} of its {frames} samples decode", skippable=True)


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {value}")
    return number


def add_audio_arguments(parser: argparse.ArgumentParser, max_bad_audio_help: str) -> None:
    """The audio options of the data-dir commands: --fs, --max_bad_audio, --check_audio."""
    parser.add_argument("--fs", type=int, default=SAMPLE_RATE,
                        help="sample rate every audio file must have (others are refused, not resampled)")
    parser.add_argument("--max_bad_audio", type=_count, default=0, help=max_bad_audio_help)
    parser.add_argument("--check_audio", choices=CHECKS, default="header",
                        help="header: headers and the last samples; full: decode every file")
