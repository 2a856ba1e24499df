"""Writing a training set's Kaldi data dir from a streamed listing, with bounded memory.

A training corpus module lists its utterances as a generator of ``Utterance`` s (an iterator
over the corpus's metadata, never a list of the whole set: Libriheavy large has ~11M cuts).
``write_train_set`` writes each row as it comes, then sorts every file with ``LC_ALL=C sort``
(external merge sort, bounded buffer), and writes ``<data_dir>/<set>/``:

    wav.scp    utt <audio path>                   (whole-file utterances, e.g. LibriSpeech)
      or
    wav.scp    recording <audio path>             (segmented sets, e.g. Libriheavy)
    segments   utt recording <start> <end>        (seconds)
    text       utt WORDS                          (upper case, as LibriSpeech's transcripts)
    utt2spk, spk2utt, utt2dur
    .prepared  fingerprint of the inputs and counts: the same inputs are not prepared again

No audio is copied: wav.scp points at the corpus's own files. A segmented dir is read by ESPnet
with ``<dir>/segments,speech,kaldi_segments`` (:mod:`espnet_omni.data.kaldi_segments`).
The dir is built beside the old one and swapped in at the end: a failure keeps what was there.
"""

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, TextIO

from espnet_omni.corpora.prepare import CorpusError, is_prepared, replace_dir
from espnet_omni.recipe.data_dir import sort_file, write_spk2utt

# Bumped when the output changes for the same inputs.
PREPARATION_VERSION = 1


@dataclass(frozen=True)
class Utterance:
    """One training utterance: ``audio`` whole (``start`` None) or from ``start`` to ``end``
    seconds of the recording ``recording``; ``where`` is the metadata file:line it came from."""

    utt_id: str
    speaker: str
    audio: Path
    text: str
    duration: float
    where: str
    recording: Optional[str] = None
    start: Optional[float] = None
    end: Optional[float] = None


@dataclass
class TrainListing:
    """A training set as a corpus module lists it: ``utterances()`` streams it; ``inputs`` are
    the metadata files it reads (their path, size and time make the fingerprint)."""

    utterances: Callable[[], Iterator[Utterance]]
    inputs: List[Path]
    segmented: bool
    description: str = ""
    roots: List[Path] = field(default_factory=list)


def fingerprint(name: str, listing: TrainListing) -> str:
    digest = hashlib.sha256(f"train preparation {PREPARATION_VERSION} {name}\n".encode())
    for root in listing.roots:
        digest.update(f"root {Path(root).resolve()}\n".encode())
    for path in sorted(map(Path, listing.inputs)):
        stat = path.stat()
        digest.update(f"{path.resolve()} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _seconds(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def _check_unique(path: Path, what: str) -> int:
    """Lines of a sorted table; CorpusError on a repeated first column."""
    previous, count = None, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            key = line.split(" ", 1)[0]
            if key == previous:
                raise CorpusError(f"{what} '{key}' is listed twice (see {path.name})")
            previous = key
            count += 1
    return count


def write_train_set(name: str, listing: TrainListing, data_dir: Path, force: bool = False) -> str:
    """Write ``<data_dir>/<name>`` from ``listing``; returns "prepared" or "up to date".

    Utterances whose text is empty are left out (nothing to learn from). Raises CorpusError
    naming the metadata file and line of a bad utterance.
    """
    data_dir = Path(data_dir)
    out_dir = data_dir / name
    digest = fingerprint(name, listing)
    if not force and is_prepared(out_dir, digest):
        return "up to date"
    work = data_dir / f".{name}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        stats = _write_tables(work, listing)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    (work / ".prepared").write_text(json.dumps({"fingerprint": digest, **stats}) + "\n")
    replace_dir(work, out_dir)
    return "prepared"


def _write_tables(work: Path, listing: TrainListing) -> Dict[str, float]:
    names = ["wav.scp", "text", "utt2spk", "utt2dur"] + (["segments"] if listing.segmented else [])
    files: Dict[str, TextIO] = {n: open(work / f"{n}.unsorted", "w", encoding="utf-8") for n in names}
    seconds, empty, last_recording = 0.0, 0, None
    try:
        for u in listing.utterances():
            if not u.utt_id or any(c.isspace() for c in u.utt_id + u.speaker):
                raise CorpusError(
                    f"{u.where}: utterance id '{u.utt_id}' or speaker '{u.speaker}' is empty or has spaces"
                )
            if not u.utt_id.startswith(u.speaker):
                raise CorpusError(f"{u.where}: utterance id '{u.utt_id}' does not start with its speaker '{u.speaker}'")
            text = " ".join(u.text.split())
            if not text:
                empty += 1
                continue
            if listing.segmented:
                if (u.recording, u.audio) != last_recording:  # consecutive cuts share a recording
                    files["wav.scp"].write(f"{u.recording} {u.audio}\n")
                    last_recording = (u.recording, u.audio)
                files["segments"].write(f"{u.utt_id} {u.recording} {_seconds(u.start)} {_seconds(u.end)}\n")
            else:
                files["wav.scp"].write(f"{u.utt_id} {u.audio}\n")
            files["text"].write(f"{u.utt_id} {text}\n")
            files["utt2spk"].write(f"{u.utt_id} {u.speaker}\n")
            files["utt2dur"].write(f"{u.utt_id} {u.duration:.3f}\n")
            seconds += u.duration
    finally:
        for f in files.values():
            f.close()
    for n in names:
        # Identical recording lines from non-consecutive cuts collapse; a recording id given two
        # paths, or an utterance id given twice, is then caught by _check_unique.
        unique = ("-u",) if n == "wav.scp" and listing.segmented else ()
        sort_file(work / f"{n}.unsorted", work / n, *unique)
        (work / f"{n}.unsorted").unlink()
    count = _check_unique(work / ("segments" if listing.segmented else "wav.scp"), "utterance id")
    if listing.segmented:
        _check_unique(work / "wav.scp", "recording id")
    if count == 0:
        raise CorpusError(f"{listing.description or work.name}: the corpus lists no utterance with text")
    write_spk2utt(work / "utt2spk", work / "spk2utt")
    return {"utterances": count, "hours": round(seconds / 3600, 3), "empty_text_dropped": empty}
