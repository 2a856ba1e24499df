"""Word error rate scoring with one pinned English normaliser on both sides.

References and hypotheses are normalised with Whisper's ``EnglishTextNormalizer`` (package
``whisper-normalizer``, pinned in setup.py): lower case, brackets and fillers removed,
contractions expanded, spelled-out numbers turned into digits, British spellings made
American. Alignment uses NIST ``sclite`` when it is installed (Debian package ``sctk``) and
otherwise ``align_counts``, which reproduces sclite's alignment (substitution cost 4, insertion
and deletion 3, ties broken as sclite does), so that both give the same per-utterance
substitution, deletion and insertion counts on the same trn files. (Unit-cost Levenshtein, as
in jiwer, gives the same error totals but splits them differently.)
"""

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_omni.extras import require_extra
from espnet_omni.whole_file import open_whole, write_text_whole

SCLITE_DIRS = ("/usr/lib/sctk/bin", "/usr/local/bin", "/usr/bin")


@dataclass(frozen=True)
class UttErrors:
    """Alignment counts of one utterance."""

    utt_id: str
    ref_words: int
    sub: int
    dele: int
    ins: int

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins


_normalizer = None


def normalize(text: str) -> str:
    """The pinned English normaliser (Whisper's), whitespace-collapsed."""
    global _normalizer
    if _normalizer is None:
        english = require_extra("whisper_normalizer.english", "Scoring's text normalisation")
        _normalizer = english.EnglishTextNormalizer()
    return " ".join(_normalizer(text).split())


def read_text(path: Path) -> Dict[str, str]:
    """``utt words`` lines -> dict (an utterance with no words maps to "")."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=1)
        if parts:
            out[parts[0]] = parts[1] if len(parts) > 1 else ""
    return out


def write_trn(path: Path, texts: Dict[str, str], utt2spk: Dict[str, str]) -> None:
    """sclite trn lines ``words (spk-utt)``, in utterance order."""
    with open_whole(path) as f:
        for utt in sorted(texts):
            f.write(f"{texts[utt]} ({utt2spk.get(utt, utt)}-{utt})\n")


def read_trn(path: Path) -> Dict[str, str]:
    """Inverse of ``write_trn``: ``{spk-utt: words}``."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        match = re.match(r"^(.*)\((\S+)\)\s*$", line)
        if match:
            out[match.group(2)] = " ".join(match.group(1).split())
    return out


def find_sclite() -> Optional[str]:
    """Path of NIST sclite, or None (Debian installs it outside PATH)."""
    found = shutil.which("sclite")
    if found:
        return found
    for folder in SCLITE_DIRS:
        candidate = os.path.join(folder, "sclite")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def score_sclite(ref_trn: Path, hyp_trn: Path, sclite: str) -> List[UttErrors]:
    """Per-utterance counts from sclite's pralign report."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sclite, "-r", str(ref_trn), "trn", "-h", str(hyp_trn), "trn", "-i", "rm",
             "-o", "pralign", "-O", tmp, "-n", "result"],
            check=True, capture_output=True,
        )
        report = (Path(tmp) / "result.pra").read_text(encoding="utf-8", errors="replace")
    refs = read_trn(ref_trn)
    out = []
    for match in re.finditer(r"^id: \((\S+)\)\s*\nScores: \(#C #S #D #I\) (\d+) (\d+) (\d+) (\d+)", report, re.M):
        utt, c, s, d, i = match.group(1), *map(int, match.groups()[1:])
        out.append(UttErrors(utt, c + s + d, s, d, i))
    if len(out) != len(refs):
        raise RuntimeError(f"sclite scored {len(out)} of {len(refs)} utterances of {ref_trn}")
    return sorted(out, key=lambda e: e.utt_id)


def align_counts(ref: Sequence[str], hyp: Sequence[str]) -> Tuple[int, int, int]:
    """(substitutions, deletions, insertions) of sclite's minimum-cost word alignment."""
    sub_cost, gap_cost = 4, 3
    rows, cols = len(ref) + 1, len(hyp) + 1
    cost = [[0] * cols for _ in range(rows)]
    for i in range(1, rows):
        cost[i][0] = gap_cost * i
    for j in range(1, cols):
        cost[0][j] = gap_cost * j
    for i in range(1, rows):
        for j in range(1, cols):
            diagonal = cost[i - 1][j - 1] + (0 if ref[i - 1] == hyp[j - 1] else sub_cost)
            cost[i][j] = min(diagonal, cost[i - 1][j] + gap_cost, cost[i][j - 1] + gap_cost)
    i, j = rows - 1, cols - 1
    sub = dele = ins = 0
    while i > 0 or j > 0:  # prefer a diagonal step, then an insertion, then a deletion
        if i > 0 and j > 0:
            mismatch = ref[i - 1] != hyp[j - 1]
            if cost[i][j] == cost[i - 1][j - 1] + (sub_cost if mismatch else 0):
                sub += mismatch
                i, j = i - 1, j - 1
                continue
        if j > 0 and cost[i][j] == cost[i][j - 1] + gap_cost:
            ins += 1
            j -= 1
        else:
            dele += 1
            i -= 1
    return sub, dele, ins


def score_python(ref_trn: Path, hyp_trn: Path) -> List[UttErrors]:
    """Per-utterance counts from ``align_counts`` (sclite's alignment, in Python)."""
    refs, hyps = read_trn(ref_trn), read_trn(hyp_trn)
    out = []
    for utt in sorted(refs):
        ref, hyp = refs[utt].split(), hyps.get(utt, "").split()
        out.append(UttErrors(utt, len(ref), *align_counts(ref, hyp)))
    return out


def score_dir(
    ref_text: Path, hyp_text: Path, utt2spk: Path, out_dir: Path, scorer: str = "auto",
    glm: Optional[Path] = None,
) -> Tuple[List[UttErrors], str]:
    """Normalise, write ref.trn/hyp.trn, align, and write per-utterance and summary results.

    Args:
        scorer: "sclite", "python" or "auto" (sclite when installed).
        glm: the corpus's NIST GLM file (Hub5'00): both sides are mapped to its canonical
            spellings before the normaliser.

    Returns:
        per-utterance counts and the name of the scorer used.

    Each file is written whole, ``utt_errors.tsv`` (what the results read) last, and the
    previous scores are removed first: an interrupted scoring leaves no score, never a partial
    or stale one.
    """
    refs, hyps = read_text(ref_text), read_text(hyp_text)
    missing = sorted(set(refs) - set(hyps))
    if missing:
        raise ValueError(f"{hyp_text}: no hypothesis for {len(missing)} utterance(s), e.g. '{missing[0]}'")
    spk = {u: s for u, s in read_text(utt2spk).items()}
    prepare = normalize
    if glm is not None:
        from espnet_omni.recipe.glm import read_glm

        rules = read_glm(glm)

        def prepare(text: str) -> str:
            return normalize(rules.apply(text))

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("utt_errors.tsv", "result.txt"):
        (out_dir / name).unlink(missing_ok=True)
    write_trn(out_dir / "ref.trn", {u: prepare(t) for u, t in refs.items()}, spk)
    write_trn(out_dir / "hyp.trn", {u: prepare(hyps[u]) for u in refs}, spk)
    sclite = find_sclite() if scorer in ("auto", "sclite") else None
    if scorer == "sclite" and sclite is None:
        raise FileNotFoundError("sclite not found: install Debian's sctk or use --scorer python")
    if sclite:
        errors, name = score_sclite(out_dir / "ref.trn", out_dir / "hyp.trn", sclite), "sclite"
    else:
        errors, name = score_python(out_dir / "ref.trn", out_dir / "hyp.trn"), "python"
    words = sum(e.ref_words for e in errors)
    totals = [sum(getattr(e, k) for e in errors) for k in ("sub", "dele", "ins")]
    wer = 100.0 * sum(totals) / max(words, 1)
    write_text_whole(
        out_dir / "result.txt",
        f"scorer: {name}\nnormaliser: whisper EnglishTextNormalizer{' after the GLM ' + str(glm) if glm else ''}\n"
        f"utterances: {len(errors)}\nwords: {words}\n"
        f"substitutions: {totals[0]}\ndeletions: {totals[1]}\ninsertions: {totals[2]}\n"
        f"WER: {wer:.2f}\n",
    )
    with open_whole(out_dir / "utt_errors.tsv") as f:
        f.write("utt_id\tref_words\tsub\tdel\tins\n")
        for e in errors:
            f.write(f"{e.utt_id}\t{e.ref_words}\t{e.sub}\t{e.dele}\t{e.ins}\n")
    return errors, name


def wer(errors: Sequence[UttErrors]) -> float:
    """Corpus WER in percent."""
    return 100.0 * sum(e.errors for e in errors) / max(sum(e.ref_words for e in errors), 1)


def read_utt_errors(path: Path) -> List[UttErrors]:
    rows = Path(path).read_text().splitlines()[1:]
    return [UttErrors(u, int(r), int(s), int(d), int(i)) for u, r, s, d, i in (row.split("\t") for row in rows)]
