"""Hub5'00 English (eval2000): its Switchboard and CallHome halves, as Kaldi's swbd recipe
prepares them (``local/eval2000_data_prep.sh``, used by ESPnet's swbd recipe too).

``EVAL2000`` names two folders, the speech (LDC2002S09) and the transcripts (LDC2002T43):

    <speech>/english/{sw_4xxx,en_xxxx}.sph   2-channel 8 kHz SPHERE, side A = channel 0, B = 1
    <speech>/english/hub5e_00.pem            scoring segments: conv side speaker start end
    <transcripts>/reference/hub5e00.english.000405.stm   conv side conv_side start end <labels> words
    <transcripts>/reference/en20000405_hub5.glm          NIST GLM (copied into the data dir)

``<speech>`` is the ``hub5e_00`` folder (or the LDC2002S09 folder above it); ``<transcripts>``
may hold ``2000_hub5_eng_eval_tr/reference`` instead. lhotse's ``prepare_eval2000`` is not
used: it probes every ``.sph`` (even plain u-law) through the ``sph2pipe`` binary, segments by
the per-conversation ``reference/english/*.txt`` transcripts (not the PEM's scoring segments),
keeps their markup (``<contraction ...>``, ``%um``) as text and ids supervisions
``<conv>-<n>``; the PEM and STM are parsed here instead.

As in Kaldi, each PEM segment is keyed ``<conv>-<side>_<start*100>-<end*100>`` (awk's ``%06d``
truncation), must have exactly one STM line with that key and vice versa, and is cut at the
PEM's times.
"""

import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from espnet_omni.corpora.prepare import CorpusFormatError, Listing, Segment, first_folder, require
from espnet_omni.recipe.glm import read_glm

STM_NAME = "hub5e00.english.000405.stm"
GLM_NAME = "en20000405_hub5.glm"
PEM_NAME = "hub5e_00.pem"
CHANNEL = {"A": 0, "B": 1}


def speech_dir(root: Path) -> Path:
    """``<root>/english`` or ``<root>/hub5e_00/english`` (root = LDC2002S09)."""
    return first_folder(
        [root / "english", root / "hub5e_00" / "english"],
        f"the Hub5'00 speech folder (LDC2002S09's hub5e_00/english: *.sph and {PEM_NAME}) at",
    )


def reference_dir(root: Path) -> Path:
    """``<root>/reference`` or ``<root>/2000_hub5_eng_eval_tr/reference`` (root = LDC2002T43)."""
    return first_folder(
        [root / "reference", root / "2000_hub5_eng_eval_tr" / "reference"],
        f"the Hub5'00 transcripts folder (LDC2002T43's reference/: {STM_NAME}, {GLM_NAME}) at",
    )


def segment_key(conversation: str, side: str, start: str, end: str) -> str:
    """Kaldi's utterance id; ``int(float * 100)`` truncates like awk's ``%06d`` (1.15 -> 000114)."""
    return f"{conversation}-{side}_{int(float(start) * 100):06d}-{int(float(end) * 100):06d}"


def _segment_fields(path: Path, number: int, parts: List[str], expected: str) -> Tuple[float, float]:
    """Check a PEM/STM line's side and times; its (start, end)."""
    try:
        if len(parts) < 5 or parts[1] not in CHANNEL:
            raise ValueError
        start, end = float(parts[3]), float(parts[4])
    except ValueError:
        raise CorpusFormatError(path, number, f"expected {expected}, got '{' '.join(parts)}'") from None
    if not 0 <= start < end:
        raise CorpusFormatError(path, number, f"expected 0 <= start < end, got {parts[3]} {parts[4]}")
    return start, end


def read_pem(path: Path) -> Dict[str, Tuple[int, str, str, float, float]]:
    """Utterance id -> (line, conversation, side, start, end); a repeated segment is kept once."""
    segments = {}
    with path.open(encoding="latin-1") as f:
        for number, line in enumerate(f, 1):
            if not line.strip() or line.startswith(";;"):
                continue
            parts = line.split()
            start, end = _segment_fields(path, number, parts, "'<conv> <A|B> <speaker> <start> <end>'")
            key = segment_key(parts[0], parts[1], parts[3], parts[4])
            segments.setdefault(key, (number, parts[0], parts[1], start, end))
    return segments


def read_stm(path: Path) -> Dict[str, Tuple[int, str]]:
    """Utterance id -> (line, words) of the STM, without its labels field."""
    texts: Dict[str, Tuple[int, str]] = {}
    with path.open(encoding="latin-1") as f:
        for number, line in enumerate(f, 1):
            if not line.strip() or line.startswith(";;"):
                continue
            parts = line.split(None, 5)
            _segment_fields(path, number, parts, "'<conv> <A|B> <conv>_<A|B> <start> <end> <labels> words'")
            words = parts[5] if len(parts) > 5 else ""
            if re.match(r"<[^<>\s]*,[^<>\s]*>|<O>", words):  # the labels field, e.g. <O,en,F,en-F>
                words = words.split(">", 1)[1]
            key = segment_key(parts[0], parts[1], parts[3], parts[4])
            if key in texts:
                raise CorpusFormatError(
                    path, number, f"expected one line per segment; {key} is also at line {texts[key][0]}"
                )
            texts[key] = (number, words)
    return texts


def scoring_text(words: str) -> str:
    """STM words after Hub5'00's scoring conventions, as they bear on a plain trn scorer.

    Dropped: asides' ``<B_ASIDE>``/``<E_ASIDE>`` tags, optionally deletable words in
    parentheses (``(%HESITATION)``, ``(UH)``, fragments ``(BUT-)``), ``%`` hesitation tokens and
    bare fragments (``BU-``, ``-TION``: only sclite's fragment matching could score them).
    Kept: the words of uncertain transcriptions ``(( ... ))`` and the first alternative of
    ``{ A / B }`` (``@`` = nothing). A segment marked IGNORE_TIME_SEGMENT_IN_SCORING has none.
    """
    if "IGNORE_TIME_SEGMENT_" in words:
        return ""
    text = re.sub(r"<[^<>\s]*>", " ", words).replace("((", " ").replace("))", " ")
    while "{" in text:
        replaced = re.sub(r"\{([^{}]*)\}", lambda m: " " + m.group(1).split("/")[0].replace("@", " ") + " ", text)
        if replaced == text:
            break
        text = replaced
    text = re.sub(r"(?<!\S)\([^()]*\)(?!\S)", " ", text)  # whole words only: "BU(T)-" is a fragment
    kept = []
    for token in text.replace("(", "").replace(")", "").split():
        if token.startswith(("%", "-")) or token.endswith("-"):
            continue
        kept.append(token)
    return " ".join(kept)


def list_part(roots: Sequence[Path], prefix: str) -> Listing:
    speech, reference = speech_dir(Path(roots[0])), reference_dir(Path(roots[1]))
    pem_path = require(speech / PEM_NAME, "the Hub5'00 segment file")
    stm_path = require(reference / STM_NAME, "the Hub5'00 reference STM")
    glm_path = require(reference / GLM_NAME, "the Hub5'00 GLM")
    read_glm(glm_path)  # a malformed GLM is reported now, not when scoring
    pem, stm = read_pem(pem_path), read_stm(stm_path)
    for key, (number, *_) in pem.items():
        if key not in stm:
            raise CorpusFormatError(
                pem_path, number, f"expected a line in {stm_path} for segment {key} (same side, start, end)"
            )
    for key, (number, _) in stm.items():
        if key not in pem:
            raise CorpusFormatError(
                stm_path, number, f"expected a segment in {pem_path} for {key} (same side, start, end)"
            )
    segments = []
    for key, (_, conv, side, start, end) in sorted(pem.items()):
        if conv.startswith(prefix):
            segments.append(Segment(
                utt_id=key, speaker=f"{conv}-{side}", audio=require(speech / f"{conv}.sph", "the recording"),
                text=scoring_text(stm[key][1]), start=start, end=end, channel=CHANNEL[side],
            ))
    if not segments:
        raise CorpusFormatError(pem_path, 0, f"expected segments of {prefix}* conversations")
    return Listing(segments, [pem_path, stm_path], glm=glm_path)


def list_switchboard(roots: Sequence[Path]) -> Listing:
    return list_part(roots, "sw_")


def list_callhome(roots: Sequence[Path]) -> Listing:
    return list_part(roots, "en_")
