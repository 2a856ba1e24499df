"""TED-LIUM 3 legacy test set (the TED-LIUM 1/2 test talks), listed from its STM files.

``TEDLIUM3`` holds ``TEDLIUM_release-3/legacy/test/`` (or is ``TEDLIUM_release-3``) with
``sph/<talk>.sph`` (one 16 kHz 16-bit PCM SPHERE file per talk) and ``stm/<talk>.stm``, one
segment a line::

    <talk> 1 <speaker> <start> <end> <o,f0,male> words ...

lhotse's ``prepare_tedlium`` reads every SPHERE header through ``sph2pipe`` (no registry ships
it), numbers segments by STM line and keeps ``<sil>``, so the STM is parsed here. Segments whose
text is ``ignore_time_segment_in_scoring`` are dropped, noise tokens (``<sil>``, ``{NOISE}``,
``[...]``) removed and split contractions joined ("i 'd" -> "i'd"), as Kaldi's recipe does;
utterance ids are Kaldi's ``<talk>-<start cs, 7 digits>-<end cs, 7 digits>``, speaker = talk.
"""

import re
from pathlib import Path
from typing import List, Sequence

from espnet_omni.corpora.prepare import CorpusFormatError, Listing, Segment, require

IGNORE = "ignore_time_segment_in_scoring"
_NOISE = re.compile(r"^(<[^>]*>|\{[^}]*\}|\[[^\]]*\])$")
_SUFFIX = re.compile(r"^'[a-z]", re.IGNORECASE)  # 'd 's 're 've 'll 't 'm 'cause ...


def scoring_text(words: Sequence[str]) -> str:
    """The reference words of an STM segment: noise tokens removed, split contractions joined."""
    out: List[str] = []
    for word in words:
        if _NOISE.match(word):
            continue
        if out and _SUFFIX.match(word):
            out[-1] += word
        else:
            out.append(word)
    return " ".join(out)


def parse_stm(stm: Path, sph_dir: Path) -> List[Segment]:
    segments = []
    with open(stm, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith(";;"):
                continue
            try:
                talk, _channel, _speaker, start, end, label, *words = fields
                start_s, end_s = float(start), float(end)
                if not (label.startswith("<") and label.endswith(">")) or not 0 <= start_s < end_s:
                    raise ValueError
            except ValueError:
                raise CorpusFormatError(
                    stm, number, "expected '<talk> <channel> <speaker> <start> <end> <o,f0,gender> words', start < end"
                ) from None
            if words == [IGNORE]:
                continue
            segments.append(Segment(
                utt_id=f"{talk}-{round(start_s * 100):07d}-{round(end_s * 100):07d}",
                speaker=talk,
                audio=require(sph_dir / f"{talk}.sph", f"the audio of the talk in {stm}:{number}"),
                text=scoring_text(words),
                start=start_s,
                end=end_s,
            ))
    return segments


def list_test(roots: Sequence[Path]) -> Listing:
    release = Path(roots[0]) / "TEDLIUM_release-3"
    if not release.is_dir() and (Path(roots[0]) / "legacy").is_dir():  # TEDLIUM3 names the release itself
        release = Path(roots[0])
    test = release / "legacy" / "test"
    stm_dir = require(test / "stm", "the TED-LIUM 3 legacy test STM folder")
    sph_dir = require(test / "sph", "the TED-LIUM 3 legacy test SPHERE folder")
    stms = sorted(stm_dir.glob("*.stm"))
    if not stms:
        raise CorpusFormatError(stm_dir, 0, "expected <talk>.stm files in it")
    return Listing([s for stm in stms for s in parse_stm(stm, sph_dir)], stms)
