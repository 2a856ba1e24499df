"""The benchmark test sets: their names, the corpus each comes from, and their preparation.

``TEST_SETS`` is in the order of the paper's table (Omni-Router, arXiv 2507.05724). Each set
is listed by a function of its corpus module, given the folders of its ``db.sh`` variable (one
folder; two for ``EVAL2000``); a corpus module is imported only when one of its sets is
prepared.
"""

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Sequence

from espnet_omni.corpora.prepare import CorpusError, Listing, write_test_set


@dataclass(frozen=True)
class TestSet:
    name: str  # the data dir under data/
    label: str  # the column of the results table
    variable: str  # the db.sh variable naming where its corpus is
    lister: str  # "<module>:<function>" in espnet_omni.corpora, called with the variable's folders

    def list(self, roots: Sequence[Path]) -> Listing:
        module, function = self.lister.split(":")
        return getattr(importlib.import_module(f"espnet_omni.corpora.{module}"), function)(roots)


TEST_SETS: Dict[str, TestSet] = {t.name: t for t in (
    TestSet("ami_ihm_eval", "AMI-IHM", "AMI", "ami:list_ihm_eval"),
    TestSet("chime6_eval", "CHiME-6", "CHIME6", "chime6:list_eval"),
    TestSet("commonvoice_test", "CommonVoice", "COMMONVOICE", "commonvoice:list_test"),
    TestSet("fleurs_test", "FLEURS", "FLEURS", "fleurs:list_test"),
    TestSet("callhome_eval2000", "CallHome", "EVAL2000", "eval2000:list_callhome"),
    TestSet("swbd_eval2000", "Switchboard", "EVAL2000", "eval2000:list_switchboard"),
    TestSet("librispeech_test_clean", "LibriSpeech test-clean", "LIBRISPEECH", "librispeech:list_test_clean"),
    TestSet("librispeech_test_other", "LibriSpeech test-other", "LIBRISPEECH", "librispeech:list_test_other"),
    TestSet("wsj_eval92", "WSJ nov92", "WSJ0", "wsj:list_eval92"),
    TestSet("tedlium3_test", "TED-LIUM 3", "TEDLIUM3", "tedlium:list_test"),
    TestSet("voxpopuli_test", "VoxPopuli", "VOXPOPULI", "voxpopuli:list_test"),
)}
# In-domain for a model trained on LibriSpeech or Libriheavy; the rest are out-of-domain.
IN_DOMAIN = ("librispeech_test_clean",)
# How many folders each variable names (EVAL2000: speech LDC2002S09, transcripts LDC2002T43).
FOLDERS = {"EVAL2000": 2}


class Outcome(NamedTuple):
    name: str
    status: str  # "prepared", "up to date" or "skipped"
    detail: str


def roots_of(test_set: TestSet, db: Mapping[str, str]) -> List[Path]:
    """The folders of the set's variable; CorpusError when it is empty or has the wrong count."""
    value = db.get(test_set.variable, "").split()
    expected = FOLDERS.get(test_set.variable, 1)
    if not value:
        raise CorpusError(f"{test_set.variable} is empty in db.sh")
    if len(value) != expected:
        raise CorpusError(
            f"{test_set.variable}='{' '.join(value)}' names {len(value)} folder(s), expected {expected}"
        )
    return [Path(v) for v in value]


def prepare_test_sets(
    names: Sequence[str], db: Mapping[str, str], data_dir: Path, force: bool = False
) -> List[Outcome]:
    """Prepare each named set; a set whose corpus is missing or malformed is skipped with the
    reason, and the others still run."""
    unknown = [n for n in names if n not in TEST_SETS]
    if unknown:
        raise ValueError(f"unknown test set(s) {unknown}; known: {' '.join(TEST_SETS)}")
    outcomes = []
    for name in names:
        test_set = TEST_SETS[name]
        try:
            roots = roots_of(test_set, db)
            listing = test_set.list(roots)
            status = write_test_set(name, listing, data_dir, force)
            detail = f"{test_set.variable}={' '.join(map(str, roots))}"
        except CorpusError as err:
            status, detail = "skipped", f"{test_set.variable}: {err}"
        logging.info("%s: %s (%s)", name, status, detail)
        outcomes.append(Outcome(name, status, detail))
    return outcomes
