"""The training and development sets of the paper's scale: their names, corpora and preparation.

    librispeech_train_960  LibriSpeech train-clean-100 + train-clean-360 + train-other-500 (LIBRISPEECH)
    librispeech_dev        LibriSpeech dev-clean + dev-other                             (LIBRISPEECH)
    libriheavy_small       Libriheavy small  (~0.5k h; LIBRIHEAVY manifests, LIBRILIGHT audio)
    libriheavy_medium      Libriheavy medium (~5.5k h: the small and medium manifests)
    libriheavy_large       Libriheavy large  (~50k h: the small, medium and large manifests)
    libriheavy_dev         Libriheavy dev

Each is written by :func:`espnet_omni.corpora.train_dir.write_train_set`: LibriSpeech sets as
one FLAC per utterance (wav.scp), Libriheavy sets as a ``segments`` dir over the LibriLight
recordings (read with ``<dir>/segments,speech,kaldi_segments``).
"""

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

from espnet_omni.corpora.prepare import CorpusError
from espnet_omni.corpora.test_sets import Outcome
from espnet_omni.corpora.train_dir import TrainListing, write_train_set


@dataclass(frozen=True)
class TrainSet:
    name: str  # the data dir under data/
    variables: Tuple[str, ...]  # the db.sh variables naming its corpus folders, in order
    lister: str  # "<module>:<function>" in espnet_omni.corpora, called with those folders

    def list(self, roots: Sequence[Path]) -> TrainListing:
        module, function = self.lister.split(":")
        return getattr(importlib.import_module(f"espnet_omni.corpora.{module}"), function)(roots)


TRAIN_SETS: Dict[str, TrainSet] = {t.name: t for t in (
    TrainSet("librispeech_train_960", ("LIBRISPEECH",), "librispeech:list_train_960"),
    TrainSet("librispeech_dev", ("LIBRISPEECH",), "librispeech:list_dev"),
    TrainSet("libriheavy_small", ("LIBRIHEAVY", "LIBRILIGHT"), "libriheavy:list_small"),
    TrainSet("libriheavy_medium", ("LIBRIHEAVY", "LIBRILIGHT"), "libriheavy:list_medium"),
    TrainSet("libriheavy_large", ("LIBRIHEAVY", "LIBRILIGHT"), "libriheavy:list_large"),
    TrainSet("libriheavy_dev", ("LIBRIHEAVY", "LIBRILIGHT"), "libriheavy:list_dev"),
)}


def roots_of(train_set: TrainSet, db: Mapping[str, str]) -> List[Path]:
    """One folder per variable; CorpusError naming an empty variable."""
    roots = []
    for variable in train_set.variables:
        value = db.get(variable, "").strip()
        if not value:
            raise CorpusError(f"{variable} is empty in db.sh")
        roots.append(Path(value))
    return roots


def prepare_train_sets(
    names: Sequence[str], db: Mapping[str, str], data_dir: Path, force: bool = False
) -> List[Outcome]:
    """Prepare each named set; a set whose corpus is missing or malformed is skipped with the
    reason (the path or file:line), and the others still run."""
    unknown = [n for n in names if n not in TRAIN_SETS]
    if unknown:
        raise ValueError(f"unknown training set(s) {unknown}; known: {' '.join(TRAIN_SETS)}")
    outcomes = []
    for name in names:
        train_set = TRAIN_SETS[name]
        variables = "/".join(train_set.variables)
        try:
            roots = roots_of(train_set, db)
            status = write_train_set(name, train_set.list(roots), data_dir, force)
            detail = " ".join(f"{v}={r}" for v, r in zip(train_set.variables, roots))
        except CorpusError as err:
            status, detail = "skipped", f"{variables}: {err}"
        logging.info("%s: %s (%s)", name, status, detail)
        outcomes.append(Outcome(name, status, detail))
    return outcomes
