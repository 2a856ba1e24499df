"""Writing a test set's Kaldi data dir from a corpus listing, once per change of its inputs.

A corpus module lists a test set as ``Segment`` s (which recording, which channel, which
interval, which speaker and reference text) plus the metadata files it read. ``write_test_set``
cuts every segment out of its recording, recording by recording, as 16 kHz mono 16-bit FLAC,
and writes ``<data_dir>/<set>/``:

    wav.scp    utt <data_dir>/<set>/audio/<utt>.flac
    text       utt reference words (after the corpus's own conventions)
    utt2spk, spk2utt, utt2dur
    sources    utt <recording> <channel or -> <start> <end>: where each utterance was cut from
    glm        the corpus's scoring rules, when it ships them (applied by the scorer)
    .prepared  fingerprint of the inputs: the same inputs are not prepared again

The new dir is built beside the old one and swapped in at the end: a failure keeps what was
prepared before.
"""

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import soundfile

from espnet_omni.corpora.audio import SAMPLE_RATE, AudioError, AudioFile

# Bumped when the preparation's output changes for the same inputs.
PREPARATION_VERSION = 1


class CorpusError(ValueError):
    """A corpus that is missing or malformed; the message names the path or file:line."""


class CorpusNotFound(CorpusError):
    """Something a corpus must have is not on disk."""

    def __init__(self, path: Path, what: str = ""):
        self.path = Path(path)
        super().__init__(f"expected {what + ' ' if what else ''}{self.path} (not found)")


class CorpusFormatError(CorpusError):
    """A line of a corpus file that does not parse."""

    def __init__(self, path: Path, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")


def require(path: Path, what: str = "") -> Path:
    """``path`` if it exists, else CorpusNotFound naming it."""
    path = Path(path)
    if not path.exists():
        raise CorpusNotFound(path, what)
    return path


def first_folder(candidates: Sequence[Path], what: str) -> Path:
    """The first of ``candidates`` that is a folder; CorpusNotFound naming the first otherwise."""
    for candidate in candidates:
        if Path(candidate).is_dir():
            return Path(candidate)
    raise CorpusNotFound(candidates[0], what)


def read_tsv(path: Path, columns: Sequence[str]) -> Iterator[Tuple[int, Dict[str, str]]]:
    """(line number, {column: value}) for each row of a tab-separated file with a header row.

    Fields are split at tabs only and quotes are part of the text: Common Voice and VoxPopuli
    write no CSV quoting. Empty lines are skipped.
    """
    with open(path, "rb") as f:
        header = f.readline().decode("utf-8").rstrip("\r\n").split("\t")
        if not set(columns) <= set(header):
            raise CorpusFormatError(path, 1, f"expected a header row naming the columns {', '.join(columns)}")
        index = {name: header.index(name) for name in columns}
        needed = max(index.values()) + 1
        for number, raw in enumerate(f, start=2):
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) < needed:
                message = f"expected {len(header)} tab-separated fields as the header names, found {len(fields)}"
                raise CorpusFormatError(path, number, message)
            yield number, {name: fields[i] for name, i in index.items()}


@dataclass(frozen=True)
class Segment:
    """One utterance of a test set: ``audio`` from ``start`` to ``end`` seconds (None: the
    end of the file), on ``channel`` (None: the mean of the file's channels)."""

    utt_id: str
    speaker: str
    audio: Path
    text: str
    start: float = 0.0
    end: Optional[float] = None
    channel: Optional[int] = None


@dataclass
class Listing:
    """A test set as a corpus module lists it."""

    segments: List[Segment]
    inputs: List[Path] = field(default_factory=list)  # metadata files read (fingerprinted)
    glm: Optional[Path] = None  # scoring rules shipped with the corpus


def fingerprint(listing: Listing) -> str:
    """Hash of the listing and of every file it depends on (path, size, modification time)."""
    digest = hashlib.sha256(f"preparation {PREPARATION_VERSION}\n".encode())
    files = set(map(Path, listing.inputs)) | {s.audio for s in listing.segments}
    if listing.glm is not None:
        files.add(Path(listing.glm))
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path.resolve()} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    for s in listing.segments:
        digest.update(f"{s.utt_id} {s.speaker} {s.audio} {s.channel} {s.start} {s.end} {s.text}\n".encode())
    return digest.hexdigest()


def check_listing(listing: Listing) -> None:
    """Unique utterance ids without whitespace, utterance ids that start with the speaker id."""
    seen: Dict[str, Segment] = {}
    for s in listing.segments:
        if not s.utt_id or any(c.isspace() for c in s.utt_id + s.speaker):
            raise CorpusError(f"{s.audio}: utterance id '{s.utt_id}' or speaker '{s.speaker}' is empty or has spaces")
        if s.utt_id in seen:
            raise CorpusError(
                f"{s.audio}: utterance id '{s.utt_id}' is also given to a segment of {seen[s.utt_id].audio}"
            )
        if not s.utt_id.startswith(s.speaker):
            raise CorpusError(f"{s.audio}: utterance id '{s.utt_id}' does not start with its speaker id '{s.speaker}'")
        seen[s.utt_id] = s


def is_prepared(out_dir: Path, digest: str) -> bool:
    stamp = out_dir / ".prepared"
    if not stamp.exists():
        return False
    try:
        return json.loads(stamp.read_text())["fingerprint"] == digest
    except (ValueError, KeyError):
        return False


def write_test_set(name: str, listing: Listing, data_dir: Path, force: bool = False) -> str:
    """Write ``<data_dir>/<name>`` from ``listing``; returns "prepared" or "up to date".

    Segments with empty text after the corpus's conventions are left out (nothing to score).
    """
    data_dir = Path(data_dir)
    out_dir = data_dir / name
    segments = [s for s in listing.segments if s.text.strip()]
    if not segments:
        raise CorpusError(f"{name}: the corpus lists no utterance with text")
    listing = Listing(sorted(segments, key=lambda s: s.utt_id), listing.inputs, listing.glm)
    check_listing(listing)
    digest = fingerprint(listing)
    if not force and is_prepared(out_dir, digest):
        return "up to date"
    work = data_dir / f".{name}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    (work / "audio").mkdir(parents=True)
    try:
        durations = _cut_audio(listing.segments, work / "audio")
        _write_tables(work, listing.segments, durations, out_dir / "audio")
        if listing.glm is not None:
            shutil.copyfile(listing.glm, work / "glm")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    (work / ".prepared").write_text(json.dumps({
        "fingerprint": digest, "utterances": len(listing.segments),
        "hours": round(sum(durations.values()) / 3600, 3),
    }) + "\n")
    replace_dir(work, out_dir)
    return "prepared"


def replace_dir(work: Path, out_dir: Path) -> None:
    """Put the finished folder ``work`` in the place of ``out_dir``, which stays whole until then."""
    old = out_dir.parent / f".{out_dir.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(work, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _cut_audio(segments: Sequence[Segment], audio_dir: Path) -> Dict[str, float]:
    """Write each segment's FLAC, opening each recording once; returns durations in seconds."""
    by_recording: Dict[Path, List[Segment]] = {}
    for s in segments:
        by_recording.setdefault(s.audio, []).append(s)
    durations = {}
    for index, (recording, group) in enumerate(sorted(by_recording.items())):
        if index and index % 100 == 0:
            logging.info("%d of %d recordings cut", index, len(by_recording))
        with AudioFile(recording) as audio:
            for s in sorted(group, key=lambda s: s.start):
                try:
                    samples = audio.read(s.start, s.end, s.channel)
                except AudioError as err:
                    raise CorpusError(f"utterance {s.utt_id}: {err}") from err
                soundfile.write(audio_dir / f"{s.utt_id}.flac", samples, SAMPLE_RATE, subtype="PCM_16")
                durations[s.utt_id] = samples.shape[0] / SAMPLE_RATE
    return durations


def _write_tables(work: Path, segments: Sequence[Segment], durations: Dict[str, float], audio_dir: Path) -> None:
    def write(name: str, lines: Iterable[str]) -> None:
        with (work / name).open("w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")

    write("wav.scp", (f"{s.utt_id} {audio_dir / (s.utt_id + '.flac')}" for s in segments))
    write("text", (f"{s.utt_id} {' '.join(s.text.split())}" for s in segments))
    write("utt2spk", (f"{s.utt_id} {s.speaker}" for s in segments))
    write("utt2dur", (f"{s.utt_id} {durations[s.utt_id]:.3f}" for s in segments))
    spk2utt: Dict[str, List[str]] = {}
    for s in segments:
        spk2utt.setdefault(s.speaker, []).append(s.utt_id)
    write("spk2utt", (f"{spk} {' '.join(utts)}" for spk, utts in sorted(spk2utt.items())))
    write("sources", (
        f"{s.utt_id} {s.audio} {'-' if s.channel is None else s.channel} {s.start:.3f} "
        f"{'-' if s.end is None else format(s.end, '.3f')}" for s in segments
    ))
