"""NIST GLM (global mapping) files, read as canonical spellings for a plain trn scorer.

A GLM (SCTK ``doc/GLMRules.txt``; Hub5'00 ships ``en20000405_hub5.glm``) holds header lines
(``* name "..."``, ``* copy_no_hit = 'T'``, ``* case_sensitive = 'F'``, ...), ``;;`` comments
and rules ``LHS => RHS / [ ] __ [ ]``. Strings may be wrapped in ``[...]`` or ``'...'``; the
right side may be an alternation ``{ A / B C / @ }`` (``@``: nothing), possibly nested.

sclite aligns against every alternative; a plain scorer cannot, so ``Glm.apply`` maps every
phrase a rule relates (its left side and each alternative) to ONE representative, the first
alternative, and does so on both reference and hypothesis. Rules that share a phrase join one
class, whose representative is that of its earliest rule, so ``apply`` is idempotent. Words
are matched case-insensitively (unless ``case_sensitive = 'T'``), longest phrase first, as
whole words. Rules under ``;; INPUT_DEPENDENT_APPLICATION = "ctm"`` (hypothesis-only in
csrfilt) are applied to both sides too: a canonical form must be the same on both. Context-free
rules (rfilter1 rewrites those inside words too) are applied to whole words; rules with any
other context (``[WILLIAM ] __``, ``[ ] __`` alone) are skipped and listed in ``Glm.skipped``.
NIST's non-lexical class tokens (``%HESITATION``, ``%BCACK``) are dropped from the output: the
prepared reference drops them, and Whisper's normaliser would keep them as words.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from espnet_omni.corpora.prepare import CorpusFormatError

Phrase = Tuple[str, ...]

_RULE_SYNTAX = "a rule 'WORDS => WORDS / [ ] __ [ ]', a header line '* key = \"value\"' or a ';;' comment"


@dataclass
class Glm:
    """The rules of a GLM file as phrase -> canonical phrase."""

    path: Path
    header: Dict[str, str] = field(default_factory=dict)
    mapping: Dict[Phrase, Phrase] = field(default_factory=dict)  # keys case-folded unless case-sensitive
    longest: int = 0  # words in the longest phrase
    rules: int = 0  # rules applied
    skipped: List[int] = field(default_factory=list)  # line numbers of rules with unsupported contexts

    @property
    def case_sensitive(self) -> bool:
        return _true(self.header.get("case_sensitive", "F"))

    @property
    def copy_no_hit(self) -> bool:
        return _true(self.header.get("copy_no_hit", "T"))

    def key(self, words) -> Phrase:
        return tuple(words) if self.case_sensitive else tuple(w.upper() for w in words)

    def apply(self, text: str) -> str:
        """``text`` with every GLM phrase replaced by its canonical form."""
        words = text.split()
        keys = self.key(words)
        out: List[str] = []
        i = 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                canonical = self.mapping.get(keys[i:i + n])
                if canonical is not None:
                    out.extend(canonical)
                    i += n
                    break
            else:
                if self.copy_no_hit:
                    out.append(words[i])
                i += 1
        return " ".join(w for w in out if not w.startswith("%"))


def _true(value: str) -> bool:
    return value.strip().upper() in ("T", "TRUE", "YES")


def _unwrap(text: str) -> str:
    """A GLM string without its ``[...]`` or ``'...'`` delimiters."""
    text = text.strip()
    if len(text) >= 2 and (text[0], text[-1]) in (("[", "]"), ("'", "'")):
        return text[1:-1]
    return text


def _split_context(rhs: str) -> Tuple[str, Optional[str]]:
    """The replacement and the context after the first '/' outside braces and brackets."""
    depth = 0
    for i, c in enumerate(rhs):
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        elif c == "/" and depth == 0:
            return rhs[:i], rhs[i + 1:]
    return rhs, None


def _alternatives(text: str, where: Tuple[Path, int]) -> List[Phrase]:
    """Every word sequence ``text`` stands for: ``A {B / C D} E`` -> [A B E, A C D E]."""
    tokens = text.replace("{", " { ").replace("}", " } ").replace("/", " / ").split()

    def sequence(pos: int, nested: bool) -> Tuple[List[Phrase], int]:
        results: List[Phrase] = [()]
        while pos < len(tokens):
            token = tokens[pos]
            if token == "{":
                choices, pos = alternation(pos + 1)
                results = [r + c for r in results for c in choices]
            elif token in ("/", "}"):
                if not nested:
                    raise CorpusFormatError(*where, f"unexpected '{token}' outside '{{ ... }}' in '{text}'")
                return results, pos
            else:
                results = [r + (() if token == "@" else (token,)) for r in results]
                pos += 1
        if nested:
            raise CorpusFormatError(*where, f"expected '}}' to close the alternation in '{text}'")
        return results, pos

    def alternation(pos: int) -> Tuple[List[Phrase], int]:
        choices: List[Phrase] = []
        while True:
            found, pos = sequence(pos, nested=True)
            choices += found
            if tokens[pos] == "}":
                return choices, pos + 1
            pos += 1  # "/"

    return sequence(0, nested=False)[0]


def read_glm(path: Path) -> Glm:
    """Parse a NIST GLM file; CorpusFormatError names ``file:line`` of a malformed line."""
    path = Path(path)
    glm = Glm(path)
    rules: List[Tuple[int, Phrase, List[Phrase]]] = []
    in_header = True
    with path.open(encoding="latin-1") as f:  # GLMs are 8-bit ASCII files
        for number, raw in enumerate(f, 1):
            line = raw.split(";;", 1)[0].strip()
            if not line:
                continue
            header = re.match(r"\*\s*(\w+)\s*[=:]?\s*(.*)$", line) if in_header else None
            if header:  # * name "...", * copy_no_hit = 'T', ...
                glm.header[header.group(1).lower()] = header.group(2).strip().strip("'\"")
                continue
            in_header = False
            if line.count("=>") != 1:
                raise CorpusFormatError(path, number, f"expected {_RULE_SYNTAX}")
            lhs_text, rhs_text = line.split("=>")
            rhs_text, context = _split_context(rhs_text)
            if context is not None:
                if "__" not in context:
                    raise CorpusFormatError(path, number, "expected a context 'LEFT __ RIGHT' after '/'")
                left, right = (side.replace(" ", "") for side in context.split("__", 1))
                if (left, right) != ("[]", "[]"):  # only word boundaries on both sides are supported
                    glm.skipped.append(number)
                    continue
            if not lhs_text.strip():
                raise CorpusFormatError(path, number, f"expected words before '=>', got '{line}'")
            lhs = tuple(_unwrap(lhs_text).split())
            if not lhs:  # a rule on spaces ("[  ] => [ ]"): nothing to do on words
                glm.skipped.append(number)
                continue
            rules.append((number, lhs, _alternatives(_unwrap(rhs_text), (path, number))))
    _build_classes(glm, rules)
    return glm


def _build_classes(glm: Glm, rules: List[Tuple[int, Phrase, List[Phrase]]]) -> None:
    """Join the phrases of rules that share one into classes; map each to its representative."""
    class_of: Dict[Phrase, int] = {}
    members: List[List[Phrase]] = []
    representative: List[Phrase] = []
    for _, lhs, alternatives in rules:
        keys = [glm.key(p) for p in [lhs, *alternatives] if p]
        joined = sorted({class_of[k] for k in keys if k in class_of})
        if joined:
            target = joined[0]  # the earliest class keeps its representative
            for other in joined[1:]:
                for k in members[other]:
                    class_of[k] = target
                members[target] += members[other]
                members[other] = []
        else:
            target = len(members)
            members.append([])
            representative.append(alternatives[0])
        for k in keys:
            if class_of.get(k) != target:
                class_of[k] = target
                members[target].append(k)
        glm.rules += 1
    glm.mapping = {k: representative[c] for k, c in class_of.items()}
    glm.longest = max(map(len, glm.mapping), default=0)
