"""WSJ nov92 (eval92: 333 utterances, 20k open vocabulary, non-verbalised punctuation).

``WSJ0`` holds the LDC93S6B CD folders (``11-1.1`` ... ``11-14.1``, ``11-13.1``). The utterance
list is ``11-13.1/wsj0/doc/indices/test/nvp/si_et_20.ndx``, lines ``11_14_1:wsj0/si_et_20/440/
440c0201`` (CD ``11_14_1`` = folder ``11-14.1``; ``.wv1`` added when missing; ``;`` comments).
Audio: ``<spk>/<utt>.wv1``, 16 kHz SPHERE with embedded Shorten. Transcripts: one ``.dot`` file
per 6-character utterance prefix, ``<prefix>00.dot`` (beside the audio, else anywhere under
``WSJ0``, as Kaldi searches), lines ``TEXT (uttid)``.

lhotse has no WSJ recipe; this follows Kaldi's ``wsj_data_prep.sh`` (``ndx2flist.pl``,
``find_transcripts.pl``, ``normalize_transcript.pl``): utterance id = the 8-character id,
lower-cased; speaker = its 3-character speaker folder.
"""

import os
import re
from pathlib import Path
from typing import Dict, List, Sequence

from espnet_omni.corpora.prepare import CorpusError, CorpusFormatError, CorpusNotFound, Listing, Segment, require

EVAL92_NDX = Path("11-13.1/wsj0/doc/indices/test/nvp/si_et_20.ndx")
_NDX_LINE = re.compile(r"^([0-9]+_[0-9]+_[0-9]+):\s*/?(\S+)$")
_DOT_LINE = re.compile(r"^(.*)\((\w{8})\)\s*$")


def normalize_transcript(text: str) -> str:
    """A .dot transcript as a reference, after Kaldi's ``normalize_transcript.pl`` (case kept).

    Removed: noises (``[loud_breath]``, ``[<door_slam]``, ``[phone_ring/]`` ...), ``~``
    (truncated recording) and ``.`` (pause). Kept as the word: ``<word>`` (Kaldi keeps these
    words), ``*word*`` (misread), ``\\,COMMA`` -> ``,COMMA`` (backslash quoting dropped),
    ``%PERCENT`` -> ``PERCENT``, ``.POINT`` -> ``POINT``, ``--DASH`` -> ``-DASH``.
    """
    words = []
    for word in text.split():
        word = re.sub(r"\[[^\]\s]*\]", "", word.replace("\\", ""))
        if word in ("", "~", "."):
            continue
        word = {"%PERCENT": "PERCENT", ".POINT": "POINT", "--DASH": "-DASH"}.get(word.upper(), word)
        if len(word) > 2 and word[0] == "<" and word[-1] == ">":
            word = word[1:-1]
        word = word.strip("*")
        if word:
            words.append(word)
    return " ".join(words)


def cd_folders(root: Path) -> Dict[str, Path]:
    """CD id as the .ndx files write it (``11_14_1``) -> its folder (``11-14.1``)."""
    return {re.sub(r"[-.]", "_", p.name): p for p in root.iterdir() if p.is_dir()}


def all_dot_files(root: Path) -> Dict[str, Path]:
    """Every .dot file under the CD folders by name, lower-cased (Kaldi finds them anywhere)."""
    found = {}
    for folder, _, names in sorted(os.walk(root, followlinks=True)):
        for name in names:
            if name.lower().endswith(".dot"):
                found.setdefault(name.lower(), Path(folder) / name)
    return found


def read_dot(dot: Path) -> Dict[str, str]:
    """utterance id (lower-cased) -> transcript, of one .dot file."""
    transcripts = {}
    with open(dot, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            match = _DOT_LINE.match(line)
            if not match:
                raise CorpusFormatError(dot, number, "expected 'TEXT (uttid)' with an 8-character utterance id")
            transcripts[match.group(2).lower()] = match.group(1)
    return transcripts


def list_eval92(roots: Sequence[Path]) -> Listing:
    root = Path(roots[0])
    ndx = require(root / EVAL92_NDX, "the WSJ0 nov92 (eval92) utterance list")
    folders = cd_folders(root)
    segments: List[Segment] = []
    dots: Dict[Path, Dict[str, str]] = {}
    dot_index = None  # every .dot under WSJ0, built only when one is not beside its audio
    with open(ndx, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip() or line.startswith(";"):
                continue
            match = _NDX_LINE.match(line.strip())
            if not match:
                raise CorpusFormatError(ndx, number, "expected '<cd>:<path>' like 11_14_1:wsj0/si_et_20/440/440c0201")
            cd, relative = match.groups()
            if cd not in folders:
                major, minor, part = cd.split("_")
                raise CorpusNotFound(root / f"{major}-{minor}.{part}", f"the WSJ0 CD folder of {ndx}:{number}")
            if not relative.lower().endswith(".wv1"):
                relative += ".wv1"
            audio = require(folders[cd] / relative, f"the audio listed at {ndx}:{number}")
            utt = audio.stem.lower()
            if len(utt) != 8:
                raise CorpusFormatError(ndx, number, f"expected an 8-character utterance id, got '{audio.stem}'")
            dot = beside = audio.with_name(f"{audio.stem[:6]}00.dot")
            if not beside.exists():
                dot_index = all_dot_files(root) if dot_index is None else dot_index
                dot = dot_index.get(beside.name.lower())
                if dot is None:
                    raise CorpusNotFound(beside, f"the transcripts (anywhere under {root}) of {ndx}:{number}")
            if dot not in dots:
                dots[dot] = read_dot(dot)
            if utt not in dots[dot]:
                raise CorpusError(f"{dot}: no transcript line '... ({utt})' for the utterance of {ndx}:{number}")
            segments.append(Segment(
                utt_id=utt, speaker=audio.parent.name.lower(), audio=audio,
                text=normalize_transcript(dots[dot][utt]),
            ))
    return Listing(segments, [ndx, *dots])
