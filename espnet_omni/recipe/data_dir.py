"""Kaldi-style data dirs: validation and duration filtering.

A data dir holds ``wav.scp`` (``utt path``), ``text`` (``utt words``), ``utt2spk`` and
``spk2utt``; every file is sorted by its first column, ids are unique and consistent across
files, and every utterance id starts with its speaker id (Kaldi's sorting convention, checked
only as consistency of the mapping here). Errors name the file and the line.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import soundfile


class DataDirError(ValueError):
    """A problem in a data dir, with the file and line it was found at."""


@dataclass
class Entry:
    key: str
    value: str
    line: int


def read_table(path: Path, allow_empty_value: bool = False) -> List[Entry]:
    """Read ``key value...`` lines; fail on blank keys, missing values, duplicates, disorder."""
    if not path.exists():
        raise DataDirError(f"{path}: missing")
    entries: List[Entry] = []
    seen = set()
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
            if key in seen:
                raise DataDirError(f"{path}:{number}: duplicate id '{key}'")
            if previous is not None and key < previous:
                raise DataDirError(
                    f"{path}:{number}: '{key}' comes after '{previous}': the file must be sorted "
                    f"by id (LC_ALL=C sort)"
                )
            seen.add(key)
            previous = key
            entries.append(Entry(key, value, number))
    if not entries:
        raise DataDirError(f"{path}: empty")
    return entries


def validate(data_dir: Path, check_audio: bool = True) -> Dict[str, float]:
    """Check a data dir; return ``{utt: duration_seconds}`` (empty when check_audio=False).

    Raises:
        DataDirError naming the file and line of the first problem found.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir}: not a directory")
    wav = read_table(data_dir / "wav.scp")
    text = read_table(data_dir / "text")
    utt2spk = read_table(data_dir / "utt2spk")
    ids = [e.key for e in wav]
    for name, table in (("text", text), ("utt2spk", utt2spk)):
        _same_ids(data_dir / "wav.scp", ids, data_dir / name, table)
    for e in utt2spk:
        if len(e.value.split()) != 1:
            raise DataDirError(f"{data_dir / 'utt2spk'}:{e.line}: expected one speaker id, got '{e.value}'")
    if (data_dir / "spk2utt").exists():
        expected: Dict[str, List[str]] = {}
        for e in utt2spk:
            expected.setdefault(e.value, []).append(e.key)
        for e in read_table(data_dir / "spk2utt"):
            if sorted(e.value.split()) != sorted(expected.pop(e.key, [])):
                raise DataDirError(f"{data_dir / 'spk2utt'}:{e.line}: speaker '{e.key}' disagrees with utt2spk")
        if expected:
            raise DataDirError(f"{data_dir / 'spk2utt'}: speakers missing: {sorted(expected)[:5]}")

    durations: Dict[str, float] = {}
    if check_audio:
        for e in wav:
            if len(e.value.split()) != 1 or e.value.endswith("|"):
                raise DataDirError(
                    f"{data_dir / 'wav.scp'}:{e.line}: '{e.key}' is not a plain audio path "
                    f"(commands in wav.scp are not supported)"
                )
            try:
                info = soundfile.info(e.value)
            except Exception as err:
                raise DataDirError(f"{data_dir / 'wav.scp'}:{e.line}: cannot read audio '{e.value}': {err}") from None
            if info.frames == 0:
                raise DataDirError(f"{data_dir / 'wav.scp'}:{e.line}: '{e.value}' has no samples")
            durations[e.key] = info.frames / info.samplerate
    return durations


def _same_ids(ref_path: Path, ref_ids: Sequence[str], path: Path, table: List[Entry]) -> None:
    ids = [e.key for e in table]
    if ids == list(ref_ids):
        return
    ref = set(ref_ids)
    for e in table:
        if e.key not in ref:
            raise DataDirError(f"{path}:{e.line}: '{e.key}' is not in {ref_path.name}")
    missing = sorted(ref - set(ids))
    raise DataDirError(f"{path}: no entry for {len(missing)} id(s) of {ref_path.name}, e.g. '{missing[0]}'")


def filter_by_duration(
    src: Path, dst: Path, min_seconds: float, max_seconds: float
) -> Tuple[int, int]:
    """Copy a valid data dir keeping utterances with min <= duration <= max.

    Also writes ``utt2dur``. ``dst`` is written to a temporary folder and renamed at the end,
    so an existing ``dst`` is only replaced by a complete one.

    Returns:
        (kept, dropped) utterance counts.
    """
    import shutil

    src, dst = Path(src), Path(dst)
    durations = validate(src)
    keep = {u for u, d in durations.items() if min_seconds <= d <= max_seconds}
    if not keep:
        raise DataDirError(f"{src}: no utterance lasts between {min_seconds} and {max_seconds} s")
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in ("wav.scp", "text", "utt2spk"):
        rows = [f"{e.key} {e.value}\n" for e in read_table(src / name) if e.key in keep]
        (tmp / name).write_text("".join(rows), encoding="utf-8")
    spk2utt: Dict[str, List[str]] = {}
    for e in read_table(tmp / "utt2spk"):
        spk2utt.setdefault(e.value, []).append(e.key)
    (tmp / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items())))
    (tmp / "utt2dur").write_text("".join(f"{u} {durations[u]:.3f}\n" for u in sorted(keep)))
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return len(keep), len(durations) - len(keep)

