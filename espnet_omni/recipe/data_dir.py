"""Kaldi-style data dirs: validation and duration filtering, streamed with bounded memory.

A data dir holds ``wav.scp`` (``utt path``), ``text`` (``utt words``), ``utt2spk`` and
``spk2utt``; every file is sorted by its first column, ids are unique and consistent across
files, and every utterance id starts with its speaker id (Kaldi's sorting convention, checked
only as consistency of the mapping here). Errors name the file and the line.

A dir cut from long recordings also has ``segments`` (``utt recording start end``, seconds; end
-1: the end of the recording): its ``wav.scp`` then lists recordings (``recording path``), the
utterance ids are those of ``segments``, and an utterance's duration is its segment's. ESPnet
reads such a dir with ``<dir>/segments,speech,kaldi_segments``
(:mod:`espnet_omni.data.kaldi_segments`).

The per-utterance files are read line by line, side by side (they are sorted by the same ids),
and spk2utt is checked against utt2spk sorted by speaker with ``LC_ALL=C sort``: memory holds
one speaker's utterances and, for a segmented dir, the recordings' ids and lengths, never a
table of every utterance (Libriheavy large has ~11M).
"""

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import soundfile

# Buffer of each external sort: the bound on its memory, whatever the table's size.
SORT_BUFFER = "256M"
# A segment may end this far past its recording (rounded times); the reader clips it.
END_TOLERANCE = 0.05


class DataDirError(ValueError):
    """A problem in a data dir, with the file and line it was found at."""


@dataclass
class Entry:
    key: str
    value: str
    line: int


@dataclass
class Span:
    recording: str
    start: float
    end: float  # -1: the end of the recording
    line: int


def iter_table(path: Path, allow_empty_value: bool = False) -> Iterator[Entry]:
    """``key value...`` lines as they are read; fail on blank keys, missing values, duplicates,
    disorder (keys must be in ``LC_ALL=C sort`` order), or an empty file."""
    if not path.exists():
        raise DataDirError(f"{path}: missing")
    previous = None
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.rstrip("\n")
            parts = line.split(maxsplit=1)
            if not parts:
                raise DataDirError(f"{path}:{number}: empty line")
            key = parts[0]
            value = parts[1].strip() if len(parts) > 1 else ""
            if not value and not allow_empty_value:
                raise DataDirError(f"{path}:{number}: '{key}' has no value")
            if key == previous:
                raise DataDirError(f"{path}:{number}: duplicate id '{key}'")
            if previous is not None and key < previous:
                raise DataDirError(
                    f"{path}:{number}: '{key}' comes after '{previous}': the file must be sorted "
                    f"by id (LC_ALL=C sort)"
                )
            previous = key
            yield Entry(key, value, number)
    if previous is None:
        raise DataDirError(f"{path}: empty")


def read_table(path: Path, allow_empty_value: bool = False) -> List[Entry]:
    """All of :func:`iter_table` (for small tables)."""
    return list(iter_table(path, allow_empty_value))


def parse_span(path: Path, e: Entry, recordings: Optional[Set[str]] = None) -> Span:
    """A segments line's recording and interval, checked."""
    fields = e.value.split()
    try:
        if len(fields) != 3:
            raise ValueError
        span = Span(fields[0], float(fields[1]), float(fields[2]), e.line)
    except ValueError:
        raise DataDirError(f"{path}:{e.line}: expected '<utt> <recording> <start> <end>'") from None
    if recordings is not None and span.recording not in recordings:
        raise DataDirError(f"{path}:{e.line}: recording '{span.recording}' is not in wav.scp")
    if span.start < 0 or (span.end != -1 and span.end <= span.start):
        raise DataDirError(f"{path}:{e.line}: segment {fields[1]}-{fields[2]} s is empty or negative")
    return span


def sort_file(src: Path, dst: Path, *keys: str) -> None:
    """``LC_ALL=C sort`` of ``src`` into ``dst`` (byte order, which Python's order of UTF-8 ids
    agrees with), in a bounded buffer with temporary files beside ``dst``."""
    command = ["sort", "-S", SORT_BUFFER, "-T", str(dst.parent), *keys, str(src)]
    with open(dst, "wb") as out:
        subprocess.run(command, stdout=out, check=True, env={**os.environ, "LC_ALL": "C"})


def _by_speaker(utt2spk: Path, work: Path) -> Iterator[Tuple[str, str]]:
    """(speaker, utterance) in speaker then utterance order, sorted with ``LC_ALL=C sort``."""
    by_speaker = work / "utt2spk.by_speaker"
    sort_file(utt2spk, by_speaker, "-t", " ", "-k2,2", "-k1,1")
    try:
        with open(by_speaker, encoding="utf-8") as f:
            for line in f:
                utt, spk = line.split()
                yield spk, utt
    finally:
        by_speaker.unlink(missing_ok=True)


def iter_speakers(utt2spk: Path, work: Path) -> Iterator[Tuple[str, List[str]]]:
    """(speaker, its utterances) in speaker order (``work``: a folder for the sort)."""
    speaker, utts = None, []
    for spk, utt in _by_speaker(utt2spk, work):
        if spk != speaker and speaker is not None:
            yield speaker, utts
            utts = []
        speaker = spk
        utts.append(utt)
    if speaker is not None:
        yield speaker, utts


def write_spk2utt(utt2spk: Path, spk2utt: Path) -> None:
    """spk2utt from utt2spk, written as the sorted pairs stream (no speaker's list is held)."""
    with tempfile.TemporaryDirectory(dir=spk2utt.parent) as work, spk2utt.open("w", encoding="utf-8") as out:
        speaker = None
        for spk, utt in _by_speaker(utt2spk, Path(work)):
            if spk != speaker:
                out.write(("\n" if speaker is not None else "") + spk)
                speaker = spk
            out.write(" " + utt)
        if speaker is not None:
            out.write("\n")


def _ids_of(data_dir: Path) -> Path:
    """The file whose first column is the utterance ids: segments when there is one."""
    return data_dir / "segments" if (data_dir / "segments").exists() else data_dir / "wav.scp"


def _check_tables(data_dir: Path) -> bool:
    """Check every table and their consistency; True when the dir is segmented."""
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir}: not a directory")
    segmented = (data_dir / "segments").exists()
    ref = _ids_of(data_dir)
    recordings = {e.key for e in iter_table(data_dir / "wav.scp")} if segmented else None
    if not segmented:
        for _ in iter_table(ref):
            pass
    else:
        for e in iter_table(ref):
            parse_span(ref, e, recordings)
    for name in ("text", "utt2spk"):
        for _ in iter_table(data_dir / name):
            pass
    for name in ("text", "utt2spk"):
        _same_ids(ref, data_dir / name)
    for e in iter_table(data_dir / "utt2spk"):
        if len(e.value.split()) != 1:
            raise DataDirError(f"{data_dir / 'utt2spk'}:{e.line}: expected one speaker id, got '{e.value}'")
    if (data_dir / "spk2utt").exists():
        _check_spk2utt(data_dir)
    return segmented


def _same_ids(ref_path: Path, path: Path) -> None:
    """The two sorted files have the same ids, compared line by line; an id that ``ref_path``
    lacks is reported before one that ``path`` lacks."""
    ref, other = iter_table(ref_path), iter_table(path)
    r, o = next(ref, None), next(other, None)
    missing = None
    while o is not None:
        while r is not None and r.key < o.key:
            missing = missing or r
            r = next(ref, None)
        if r is None or r.key != o.key:
            raise DataDirError(f"{path}:{o.line}: '{o.key}' is not in {ref_path.name}")
        r, o = next(ref, None), next(other, None)
    missing = missing or r
    if missing is not None:
        raise DataDirError(f"{path}: no entry for '{missing.key}' of {ref_path.name} (line {missing.line})")


def _check_spk2utt(data_dir: Path) -> None:
    path = data_dir / "spk2utt"
    with tempfile.TemporaryDirectory() as work:
        groups = iter_speakers(data_dir / "utt2spk", Path(work))
        try:
            group = next(groups, None)
            for e in iter_table(path):
                if group is not None and group[0] < e.key:
                    raise DataDirError(f"{path}: speakers missing: ['{group[0]}']")
                if group is None or group[0] != e.key or sorted(e.value.split()) != sorted(group[1]):
                    raise DataDirError(f"{path}:{e.line}: speaker '{e.key}' disagrees with utt2spk")
                group = next(groups, None)
            if group is not None:
                raise DataDirError(f"{path}: speakers missing: ['{group[0]}']")
        finally:
            groups.close()


def _audio_seconds(wav: Path, e: Entry) -> float:
    if len(e.value.split()) != 1 or e.value.endswith("|"):
        raise DataDirError(
            f"{wav}:{e.line}: '{e.key}' is not a plain audio path (commands in wav.scp are not supported)"
        )
    try:
        info = soundfile.info(e.value)
    except Exception as err:
        raise DataDirError(f"{wav}:{e.line}: cannot read audio '{e.value}': {err}") from None
    if info.frames == 0:
        raise DataDirError(f"{wav}:{e.line}: '{e.value}' has no samples")
    return info.frames / info.samplerate


def iter_durations(data_dir: Path, check_audio: bool = True) -> Iterator[Tuple[str, float]]:
    """Check a data dir (at the first ``next``), then ``(utt, seconds)`` in id order, from the
    audio headers (each recording's once) and, for a segmented dir, the segments."""
    data_dir = Path(data_dir)
    segmented = _check_tables(data_dir)
    if not check_audio:
        return
    wav = data_dir / "wav.scp"
    if not segmented:
        for e in iter_table(wav):
            yield e.key, _audio_seconds(wav, e)
        return
    lengths: Dict[str, float] = {e.key: _audio_seconds(wav, e) for e in iter_table(wav)}
    segments = data_dir / "segments"
    for e in iter_table(segments):
        span = parse_span(segments, e)
        length = lengths[span.recording]
        end = length if span.end == -1 else span.end
        if end > length + END_TOLERANCE or span.start >= length:
            raise DataDirError(
                f"{segments}:{span.line}: segment {span.start}-{span.end} s of '{span.recording}' lies past "
                f"its end ({length:.3f} s)"
            )
        yield e.key, min(end, length) - span.start


def validate(data_dir: Path, check_audio: bool = True) -> Dict[str, float]:
    """Check a data dir; return ``{utt: duration_seconds}`` (empty when check_audio=False).

    Raises:
        DataDirError naming the file and line of the first problem found.
    """
    return dict(iter_durations(data_dir, check_audio))  # the checks run at the first next()


def filter_by_duration(
    src: Path, dst: Path, min_seconds: float, max_seconds: float
) -> Tuple[int, int]:
    """Copy a valid data dir keeping utterances with min <= duration <= max.

    Also writes ``utt2dur``. A segmented dir keeps its ``segments`` and, in ``wav.scp``, the
    recordings its kept segments cut from. ``dst`` is written to a temporary folder and renamed
    at the end, so an existing ``dst`` is only replaced by a complete one.

    Returns:
        (kept, dropped) utterance counts.
    """
    src, dst = Path(src), Path(dst)
    durations = iter_durations(src)
    first = next(durations, None)  # checks the whole dir before anything is written
    segmented = (src / "segments").exists()
    ref = "segments" if segmented else "wav.scp"
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    kept = dropped = 0
    used: Set[str] = set()
    try:
        names = (ref, "text", "utt2spk")
        outs = [open(tmp / n, "w", encoding="utf-8") for n in names] + [open(tmp / "utt2dur", "w", encoding="utf-8")]
        with outs[0], outs[1], outs[2], outs[3]:
            rows = zip(*(iter_table(src / n) for n in names))
            for (utt, seconds), entries in zip(_chain(first, durations), rows):
                if not min_seconds <= seconds <= max_seconds:
                    dropped += 1
                    continue
                kept += 1
                for out, e in zip(outs, entries):
                    out.write(f"{e.key} {e.value}\n")
                outs[3].write(f"{utt} {seconds:.3f}\n")
                if segmented:
                    used.add(entries[0].value.split(maxsplit=1)[0])
        if not kept:
            raise DataDirError(f"{src}: no utterance lasts between {min_seconds} and {max_seconds} s")
        if segmented:  # only the recordings the kept segments still cut from
            with open(tmp / "wav.scp", "w", encoding="utf-8") as out:
                for e in iter_table(src / "wav.scp"):
                    if e.key in used:
                        out.write(f"{e.key} {e.value}\n")
        write_spk2utt(tmp / "utt2spk", tmp / "spk2utt")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return kept, dropped


def _chain(first, rest):
    if first is not None:
        yield first
    yield from rest
