"""CHiME-6 eval set (sessions S01, S21) on the speakers' binaural worn microphones.

``CHIME6`` holds ``CHiME6/audio/eval/S<ss>_P<pp>.wav`` (worn microphones, 2 channels, 16 kHz;
the arrays ``S<ss>_U0<k>.CH<c>.wav`` are not used) and ``CHiME6/transcriptions/eval/S<ss>.json``,
a list of utterances::

    {"speaker": "P05", "session_id": "S02", "start_time": "0:00:40.60", "end_time": "0:00:43.82",
     "words": "[noise] What were we talking about again?", "ref": "U02", "location": "kitchen"}

(CHiME-5's times are a dict per device; the speaker's own ``P<pp>`` entry is used). Each
utterance is cut from its speaker's worn microphone, both ears averaged. As Kaldi's chime6 recipe
does, utterances with ``[redacted]`` words are left out; bracketed tags (``[noise]``,
``[laughs]``, ``[inaudible 0:00:42.20]``) are removed from the text. Utterance ids are Kaldi's
``<speaker>_<session>-<start cs>-<end cs>``, speaker ``<speaker>_<session>``. lhotse's
``prepare_chime6`` keeps the tags and only reads the CHiME-6 string times, so the JSON is read here.
"""

import json
import re
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

from espnet_omni.corpora.prepare import CorpusFormatError, Listing, Segment, require

EVAL_SESSIONS = ("S01", "S21")
_TAG = re.compile(r"\[[^\]]*\]")
_HMS = re.compile(r"^(\d+):(\d\d):(\d\d(?:\.\d*)?)$")


def json_entries(path: Path) -> Iterator[Tuple[int, dict]]:
    """(line number, object) for each element of the JSON list in ``path``."""
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    try:
        json.loads(text)
        position = re.compile(r"\s*").match(text).end()
        if text[position: position + 1] != "[":
            raise CorpusFormatError(path, text.count("\n", 0, position) + 1, "expected a JSON list of utterances")
        position += 1
        while True:
            position = re.compile(r"[\s,]*").match(text, position).end()
            if text[position] == "]":
                return
            entry, end = decoder.raw_decode(text, position)
            yield text.count("\n", 0, position) + 1, entry
            position = end
    except json.JSONDecodeError as err:
        raise CorpusFormatError(path, err.lineno, f"expected JSON ({err.msg})") from None


def seconds(value, speaker: str) -> float:
    """A 'h:mm:ss.ss' time, or (CHiME-5) the speaker's own device's time in a dict per device."""
    if isinstance(value, dict):
        value = value.get(speaker)
    match = _HMS.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))


def list_session(root: Path, session: str) -> Tuple[Path, List[Segment]]:
    path = require(root / "transcriptions" / "eval" / f"{session}.json", "the CHiME-6 eval transcript")
    segments = []
    for line, entry in json_entries(path):
        try:
            if "[redacted]" in entry["words"]:
                continue
            speaker = entry["speaker"]
            start, end = seconds(entry["start_time"], speaker), seconds(entry["end_time"], speaker)
            if not re.fullmatch(r"P\d+", speaker):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise CorpusFormatError(
                path, line, "expected {\"speaker\": \"P<pp>\", \"start_time\"/\"end_time\": \"h:mm:ss.ss\" "
                "(or a dict with the speaker's time), \"words\": \"...\"}",
            ) from None
        start_cs, end_cs = round(start * 100), round(end * 100)
        if end_cs <= start_cs:
            continue
        spk = f"{speaker}_{session}"
        segments.append(Segment(
            utt_id=f"{spk}-{start_cs:07d}-{end_cs:07d}", speaker=spk,
            audio=require(root / "audio" / "eval" / f"{session}_{speaker}.wav", f"the worn microphone of {speaker}"),
            text=" ".join(_TAG.sub(" ", entry["words"]).split()), start=start_cs / 100, end=end_cs / 100,
        ))
    return path, segments


def list_eval(roots: Sequence[Path]) -> Listing:
    root = require(Path(roots[0]) / "CHiME6", "the CHiME-6 folder")
    transcripts, segments = [], []
    for session in EVAL_SESSIONS:
        path, session_segments = list_session(root, session)
        transcripts.append(path)
        segments += session_segments
    return Listing(segments, transcripts)
