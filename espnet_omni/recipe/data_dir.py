"""Kaldi-style data dirs: validation and duration filtering, streamed with bounded memory.

A data dir holds ``wav.scp`` (``utt path``), ``text`` (``utt words``), ``utt2spk`` and
``spk2utt``; every file is UTF-8 and sorted by its first column, ids are unique and consistent
across files, and every utterance id starts with its speaker id (Kaldi's sorting convention,
checked only as consistency of the mapping here).

A dir cut from long recordings also has ``segments`` (``utt recording start end``, seconds; end
-1: the end of the recording): its ``wav.scp`` then lists recordings (``recording path``), the
utterance ids are those of ``segments``, and an utterance's duration is its segment's. ESPnet
reads such a dir with ``<dir>/segments,speech,kaldi_segments``
(:mod:`espnet_omni.data.kaldi_segments`).

A check reports every problem it finds in one run (:class:`Report`), each as
``<file>:<line>: <what>`` (``<file>: <what>`` where no line applies), the first
``SHOWN_PER_FILE`` of each file listed and the others counted. Audio is checked by
:mod:`espnet_omni.recipe.audio_check`: a file that cannot be read (missing, empty, corrupt,
truncated, zero-length) is *skippable*, and filtering leaves its utterances out when there are at
most ``max_bad_audio`` such files; a sample rate or channel count other than the recipe's, and
every table problem, is an error.

The per-utterance files are read line by line, side by side (they are sorted by the same ids),
and spk2utt is checked against utt2spk sorted by speaker with ``LC_ALL=C sort``: memory holds
one speaker's utterances and, for a segmented dir, the recordings' ids and lengths, never a
table of every utterance (Libriheavy large has ~11M).
"""

import os
import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, TextIO, Tuple

from espnet_omni.recipe.audio_check import CHECKS, SAMPLE_RATE, AudioProblem, audio_seconds

# Buffer of each external sort: the bound on its memory, whatever the table's size.
SORT_BUFFER = "256M"
# A segment may end this far past its recording (rounded times); the reader clips it.
END_TOLERANCE = 0.05
# Problems listed per file and kind; the others are counted (a corpus may have millions).
SHOWN_PER_FILE = 20


@dataclass(frozen=True)
class Problem:
    """One problem, at ``file:line`` (line None: the whole file); ``audio``: the audio path of a
    wav.scp line it is about; ``skippable``: that audio cannot be read, and filtering may leave
    its utterances out."""

    file: str
    line: Optional[int]
    what: str
    audio: str = ""
    skippable: bool = False

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: " + (f"audio '{self.audio}' {self.what}" if self.audio else self.what)


class DataDirError(ValueError):
    """Problems in a data dir; the message lists them, ``problems`` holds those it lists."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()):
        super().__init__(message)
        self.problems = list(problems)


class Report:
    """The problems of a data dir as they are found: every one counted, the first ``shown`` of
    each file and kind kept (bounded memory, whatever the corpus).

    ``strict``: raise DataDirError at the first problem instead. ``listing``: a text file every
    skippable problem is also written to, in full (``file:line<TAB>audio path<TAB>reason``).
    """

    def __init__(self, shown: int = SHOWN_PER_FILE, strict: bool = False):
        self.shown = shown
        self.strict = strict
        self.listing: Optional[TextIO] = None
        self.kept: List[Problem] = []
        self.counts: Dict[Tuple[str, bool], int] = {}  # (file, skippable) -> problems

    def add(self, file: Path, line: Optional[int], what: str, audio: str = "", skippable: bool = False) -> None:
        problem = Problem(str(file), line, what, audio, skippable)
        if self.strict:
            raise DataDirError(str(problem), [problem])
        key = (problem.file, skippable)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] <= self.shown:
            self.kept.append(problem)
        if skippable and self.listing is not None:
            self.listing.write(f"{problem.file}:{line}\t{audio}\t{what}\n")

    def count(self, skippable: bool, file: Optional[Path] = None) -> int:
        """Problems of one kind, in one file or all."""
        return sum(n for (f, s), n in self.counts.items() if s == skippable and (file is None or f == str(file)))

    @property
    def errors(self) -> int:
        return self.count(False)

    @property
    def bad_audio(self) -> int:
        """Audio files that cannot be read."""
        return self.count(True)

    def failed(self, max_bad_audio: int) -> bool:
        return self.errors > 0 or self.bad_audio > max_bad_audio

    def lines(self, skippable: bool) -> List[str]:
        """The kept problems of one kind, by file, each file's followed by how many more it has."""
        out = []
        for file in dict.fromkeys(p.file for p in self.kept if p.skippable == skippable):
            out += [str(p) for p in self.kept if p.file == file and p.skippable == skippable]
            more = self.counts[(file, skippable)] - self.shown
            if more > 0:
                out.append(f"... and {more} more in {file}")
        return out

    def bad_audio_text(self, where: Path, max_bad_audio: int, listing: Optional[Path] = None) -> str:
        """The unreadable audio, with what happens to it under ``max_bad_audio`` ("" if none)."""
        n = self.bad_audio
        if not n:
            return ""
        files = f"{n} audio file{'s' if n > 1 else ''} cannot be read"
        if n > max_bad_audio:
            verdict = f"more than --max_bad_audio {max_bad_audio} allows"
        else:
            verdict = f"within --max_bad_audio {max_bad_audio}, their utterances are left out of the filtered copy"
        listed = f" (all listed in {listing})" if listing else ""
        return "\n".join([f"{where}: {files}, {verdict}{listed}:"] + self.lines(True))

    def error(self, where: Path, max_bad_audio: int, listing: Optional[Path] = None, note: str = "") -> DataDirError:
        """DataDirError listing the errors, then the unreadable audio."""
        parts = []
        if self.errors:
            parts += [f"{where}: {self.errors} problem{'s' if self.errors > 1 else ''}:"] + self.lines(False)
        if self.bad_audio:
            parts.append(self.bad_audio_text(where, max_bad_audio, listing))
        return DataDirError("\n".join(parts + ([note] if note else [])), self.kept)


def _quiet() -> Report:
    """A report for a second read of a table whose problems were reported already."""
    return Report(shown=0)


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


def iter_table(path: Path, allow_empty_value: bool = False, report: Optional[Report] = None) -> Iterator[Entry]:
    """``key value...`` lines as they are read, one Entry per id.

    Problems go to ``report`` (none given: DataDirError at the first): a missing or empty file;
    bytes that are not UTF-8 (the line is read with U+FFFD in their place); blank lines and
    duplicate ids (left out); a missing value; keys out of ``LC_ALL=C sort`` order (the first
    such line; the lines are still read).
    """
    report = report if report is not None else Report(strict=True)
    if not path.is_file():
        report.add(path, None, "missing")
        return
    previous, ordered = None, True
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                report.add(path, number, f"not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})")
                line = raw.decode("utf-8", errors="replace")
            parts = line.split(maxsplit=1)
            if not parts:
                report.add(path, number, "empty line")
                continue
            key = parts[0]
            value = parts[1].strip() if len(parts) > 1 else ""
            if key == previous:
                report.add(path, number, f"duplicate id '{key}'")
                continue
            if not value and not allow_empty_value:
                report.add(path, number, f"'{key}' has no value" + (" (empty transcript)" if path.name == "text" else ""))
            if ordered and previous is not None and key < previous:
                report.add(path, number, f"'{key}' comes after '{previous}': the file must be sorted by id "
                                         f"(LC_ALL=C sort)")
                ordered = False
            previous = key
            yield Entry(key, value, number)
    if previous is None:
        report.add(path, None, "empty")


def read_table(path: Path, allow_empty_value: bool = False) -> List[Entry]:
    """All of :func:`iter_table` (for small tables)."""
    return list(iter_table(path, allow_empty_value))


def parse_span(path: Path, e: Entry, recordings: Optional[Set[str]] = None,
               report: Optional[Report] = None) -> Optional[Span]:
    """A segments line's recording and interval, checked; None when it is wrong (reported to
    ``report``; none given: DataDirError)."""
    report = report if report is not None else Report(strict=True)
    fields = e.value.split()
    try:
        if len(fields) != 3:
            raise ValueError
        span = Span(fields[0], float(fields[1]), float(fields[2]), e.line)
    except ValueError:
        report.add(path, e.line, "expected '<utt> <recording> <start> <end>'")
        return None
    if recordings is not None and span.recording not in recordings:
        report.add(path, e.line, f"recording '{span.recording}' is not in wav.scp")
        return None
    if span.start < 0 or (span.end != -1 and span.end <= span.start):
        report.add(path, e.line, f"segment {fields[1]}-{fields[2]} s is empty or negative")
        return None
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


def _plain_path(value: str) -> bool:
    return len(value.split()) == 1 and not value.endswith("|")


def _scan(path: Path, report: Report, each: Optional[Callable[[Entry], None]] = None) -> bool:
    """Read a table through, reporting its problems (``each`` checks an entry); True when its ids
    can be compared with another table's line by line: it is present, not empty and sorted."""
    previous, ordered = None, True
    for e in iter_table(path, report=report):
        if each is not None:
            each(e)
        ordered = ordered and (previous is None or e.key > previous)
        previous = e.key
    return ordered and previous is not None


def _check_tables(data_dir: Path, report: Report) -> Optional[bool]:
    """Check every table and their consistency; whether the dir is segmented (None: no dir)."""
    if not data_dir.is_dir():
        report.add(data_dir, None, "not a directory" if data_dir.exists() else "no such directory")
        return None
    wav, segments, text, utt2spk = (data_dir / n for n in ("wav.scp", "segments", "text", "utt2spk"))
    segmented = segments.exists()
    recordings: Set[str] = set()

    def wav_entry(e: Entry) -> None:
        if e.value and not _plain_path(e.value):
            report.add(wav, e.line, f"'{e.key}' is not a plain audio path (commands in wav.scp are not supported)")
        if segmented:
            recordings.add(e.key)

    def one_speaker(e: Entry) -> None:
        if len(e.value.split()) > 1:
            report.add(utt2spk, e.line, f"expected one speaker id, got '{e.value}'")

    comparable = {wav: _scan(wav, report, wav_entry)}
    ref = wav
    if segmented:  # without a wav.scp, its absence is the one problem reported
        known = recordings if wav.is_file() else None
        comparable[segments] = _scan(segments, report, lambda e: parse_span(segments, e, known, report))
        ref = segments
    comparable[text] = _scan(text, report)
    comparable[utt2spk] = _scan(utt2spk, report, one_speaker)
    for path in (text, utt2spk):
        if comparable[ref] and comparable[path]:  # an unsorted table's disorder is its one problem
            _same_ids(ref, path, report)
    if (data_dir / "spk2utt").exists():
        if report.count(False, utt2spk) == 0:
            _check_spk2utt(data_dir, report)
        else:
            _scan(data_dir / "spk2utt", report)
    return segmented


def _same_ids(ref_path: Path, path: Path, report: Report) -> None:
    """Report each id of ``path`` that ``ref_path`` lacks and each of ``ref_path`` that ``path``
    lacks; both are sorted, and compared line by line."""
    ref, other = iter_table(ref_path, True, _quiet()), iter_table(path, True, _quiet())
    r, o = next(ref, None), next(other, None)
    while r is not None or o is not None:
        if o is None or (r is not None and r.key < o.key):
            report.add(path, None, f"no entry for '{r.key}' of {ref_path.name} (line {r.line})")
            r = next(ref, None)
        elif r is None or o.key < r.key:
            report.add(path, o.line, f"'{o.key}' is not in {ref_path.name}")
            o = next(other, None)
        else:
            r, o = next(ref, None), next(other, None)


def _check_spk2utt(data_dir: Path, report: Report) -> None:
    """spk2utt's own problems, and each speaker that disagrees with (a valid) utt2spk."""
    path = data_dir / "spk2utt"
    previous, ordered = None, True
    with tempfile.TemporaryDirectory() as work:
        groups = iter_speakers(data_dir / "utt2spk", Path(work))
        try:
            group = next(groups, None)
            for e in iter_table(path, report=report):
                ordered = ordered and (previous is None or e.key > previous)
                previous = e.key
                if not ordered:  # the disorder is reported; comparing would only repeat it
                    continue
                while group is not None and group[0] < e.key:
                    report.add(path, None, f"speaker '{group[0]}' of utt2spk is missing")
                    group = next(groups, None)
                if group is None or group[0] != e.key:
                    report.add(path, e.line, f"speaker '{e.key}' disagrees with utt2spk (it has no utterance there)")
                    continue
                if sorted(e.value.split()) != sorted(group[1]):
                    report.add(path, e.line, f"speaker '{e.key}' disagrees with utt2spk")
                group = next(groups, None)
            while ordered and previous is not None and group is not None:
                report.add(path, None, f"speaker '{group[0]}' of utt2spk is missing")
                group = next(groups, None)
        finally:
            groups.close()


def _audio_seconds(wav: Path, e: Entry, fs: int, check: str, report: Report) -> Optional[float]:
    """The duration of a wav.scp line's audio; None when it cannot be used (reported)."""
    if not _plain_path(e.value):  # reported by the table check
        return None
    try:
        return audio_seconds(e.value, fs, check)
    except AudioProblem as problem:
        report.add(wav, e.line, problem.reason, audio=e.value, skippable=problem.skippable)
        return None


def _iter_audio(data_dir: Path, segmented: bool, report: Report, fs: int, check: str
                ) -> Iterator[Tuple[str, Optional[float]]]:
    """``(utt, seconds)`` for each line of wav.scp, or of segments in a segmented dir (the
    recordings' lengths read once); seconds None when the utterance cannot be used (reported)."""
    wav = data_dir / "wav.scp"
    if not segmented:
        for e in iter_table(wav, report=_quiet()):
            yield e.key, _audio_seconds(wav, e, fs, check, report)
        return
    lengths = {e.key: _audio_seconds(wav, e, fs, check, report) for e in iter_table(wav, report=_quiet())}
    segments = data_dir / "segments"
    for e in iter_table(segments, report=_quiet()):
        span = parse_span(segments, e, report=_quiet())
        length = lengths.get(span.recording) if span is not None else None
        if length is None:
            yield e.key, None
            continue
        end = length if span.end == -1 else span.end
        if end > length + END_TOLERANCE or span.start >= length:
            report.add(segments, span.line, f"segment {span.start}-{span.end} s of '{span.recording}' lies past "
                                            f"its end ({length:.3f} s)")
            yield e.key, None
            continue
        yield e.key, min(end, length) - span.start


def _check_depth(check_audio: str, allowed: Tuple[str, ...]) -> None:
    if check_audio not in allowed:
        raise ValueError(f"check_audio must be one of {allowed}, got {check_audio!r}")


def iter_durations(
    data_dir: Path, check_audio: str = "header", fs: int = SAMPLE_RATE, max_bad_audio: int = 0,
    report: Optional[Report] = None,
) -> Iterator[Tuple[str, float]]:
    """``(utt, seconds)`` of a data dir's utterances in id order, from the audio headers (each
    recording's once) and, for a segmented dir, the segments; an utterance whose audio cannot be
    read is left out.

    The tables are checked before the first item, the audio as items are produced (nothing is
    produced from a dir whose tables have errors); after the last, DataDirError lists every
    problem when one is an error: a table problem, a sample rate other than ``fs``, more than
    one channel, or more than ``max_bad_audio`` audio files that cannot be read.
    ``check_audio``: "header" or "full" (:mod:`espnet_omni.recipe.audio_check`), or "none"
    (tables only; nothing produced). ``report``: receives every problem (e.g. to show the
    unreadable audio that was tolerated).
    """
    _check_depth(check_audio, ("none",) + CHECKS)
    data_dir = Path(data_dir)
    report = report if report is not None else Report()
    segmented = _check_tables(data_dir, report)
    if segmented is not None and check_audio != "none":
        tables_ok = report.errors == 0
        for utt, seconds in _iter_audio(data_dir, segmented, report, fs, check_audio):
            if tables_ok and seconds is not None:
                yield utt, seconds
    if report.failed(max_bad_audio):
        raise report.error(data_dir, max_bad_audio)


def validate(data_dir: Path, check_audio: str = "header", fs: int = SAMPLE_RATE,
             max_bad_audio: int = 0) -> Dict[str, float]:
    """Check a data dir; return ``{utt: duration_seconds}`` (empty when check_audio="none").

    Raises:
        DataDirError listing every problem found (see :func:`iter_durations`).
    """
    return dict(iter_durations(data_dir, check_audio, fs, max_bad_audio))


def filter_by_duration(
    src: Path, dst: Path, min_seconds: float, max_seconds: float, fs: int = SAMPLE_RATE,
    max_bad_audio: int = 0, check_audio: str = "header", report: Optional[Report] = None,
) -> Tuple[int, int]:
    """Copy a valid data dir keeping utterances with min <= duration <= max, and leaving out
    those whose audio cannot be read when there are at most ``max_bad_audio`` such files.

    Also writes ``utt2dur``, and ``bad_audio.txt`` (``wav.scp:line<TAB>path<TAB>reason`` per
    file) when audio was left out. A segmented dir keeps its ``segments`` and, in ``wav.scp``,
    the recordings its kept segments cut from. ``dst`` is written to a temporary folder and
    renamed at the end, so an existing ``dst`` is only replaced by a complete one; with more than
    ``max_bad_audio`` unreadable files their list goes beside it, to ``<dst>.bad_audio.txt``.
    ``report`` receives every problem (the unreadable audio left out among them).

    Returns:
        (kept, dropped) utterance counts; dropped: outside [min, max] (those of unreadable
        audio are counted apart, in ``report``).

    Raises:
        DataDirError listing every problem found (see :func:`iter_durations`).
    """
    _check_depth(check_audio, CHECKS)
    src, dst = Path(src), Path(dst)
    report = report if report is not None else Report()
    segmented = _check_tables(src, report)
    if report.errors:
        if segmented is not None:  # the audio too: one run reports every problem
            for _ in _iter_audio(src, segmented, report, fs, check_audio):
                pass
        raise report.error(src, max_bad_audio, note=f"Nothing was written to {dst}.")
    ref = "segments" if segmented else "wav.scp"
    tmp = dst.with_name(dst.name + ".tmp")
    failed_list = dst.with_name(dst.name + ".bad_audio.txt")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    kept = dropped = 0
    used: Set[str] = set()
    try:
        names = (ref, "text", "utt2spk")
        with ExitStack() as files:
            outs = [files.enter_context(open(tmp / n, "w", encoding="utf-8")) for n in (*names, "utt2dur")]
            report.listing = files.enter_context(open(tmp / "bad_audio.txt", "w", encoding="utf-8"))
            files.callback(setattr, report, "listing", None)
            rows = zip(*(iter_table(src / n) for n in names))
            for (utt, seconds), entries in zip(_iter_audio(src, segmented, report, fs, check_audio), rows):
                if seconds is None:  # unreadable audio (listed) or an error (reported)
                    continue
                if not min_seconds <= seconds <= max_seconds:
                    dropped += 1
                    continue
                kept += 1
                for out, e in zip(outs, entries):
                    out.write(f"{e.key} {e.value}\n")
                outs[3].write(f"{utt} {seconds:.3f}\n")
                if segmented:
                    used.add(entries[0].value.split(maxsplit=1)[0])
        if report.failed(max_bad_audio):
            listing = None
            if report.bad_audio:  # the list outlives the copy, which is removed
                listing = failed_list
                (tmp / "bad_audio.txt").replace(listing)
            raise report.error(src, max_bad_audio, listing, note=f"Nothing was written to {dst}.")
        if not kept:
            raise DataDirError(f"{src}: no utterance lasts between {min_seconds} and {max_seconds} s")
        if not report.bad_audio:
            (tmp / "bad_audio.txt").unlink()
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
    failed_list.unlink(missing_ok=True)  # the list of an earlier run that failed
    return kept, dropped
