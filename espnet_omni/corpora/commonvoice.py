"""Common Voice English test set, read from the release's ``en/test.tsv``.

``COMMONVOICE`` holds ``cv-corpus-<version>/en/`` with ``test.tsv`` (tab-separated, a header row
naming the columns: ``client_id``, ``path``, ``sentence``, ...; their order and number change
between releases, so they are found by name) and ``clips/<path>`` (48 kHz MP3). With several
releases, the newest one that has ``en/test.tsv`` is used (highest version, compared as numbers:
17.0 after 9.0); delta releases (``cv-corpus-<v>-delta-<date>``) hold only the clips added since
the release before and are never used. ``COMMONVOICE`` may also name a ``cv-corpus-<version>``
or its ``en`` folder.

The TSV is read here: lhotse's recipe fails with KeyError on releases without a ``variant``
column, silently drops rows whose clip is missing, and opens every clip in a spawned process pool.
Fields are split at tabs and quotes are part of the sentence (Common Voice writes no CSV quoting;
lhotse reads with ``QUOTE_NONE``, Kaldi's ``data_prep.pl`` splits at tabs). As in Kaldi/ESPnet's
commonvoice recipe, the speaker is the ``client_id`` and the utterance id
``<client_id>-<clip name>``; the reference is the ``sentence`` as written.
"""

import re
from collections.abc import Sequence
from pathlib import Path

from espnet_omni.corpora.prepare import CorpusFormatError, CorpusNotFound, Listing, Segment, read_tsv

COLUMNS = ("client_id", "path", "sentence")


def _version_key(name: str) -> list:
    """``cv-corpus-17.0-2024-03-15`` -> ['cv-corpus-', 17, '.', 0, ...]: numbers compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def find_english(root: Path) -> Path:
    """The ``en`` folder of the newest non-delta release under ``root`` (or ``root`` itself)."""
    for folder in (root, root / "en"):
        if (folder / "test.tsv").is_file():
            return folder
    releases = [
        d for d in root.glob("cv-corpus-*") if "delta" not in d.name and (d / "en" / "test.tsv").is_file()
    ]
    if not releases:
        raise CorpusNotFound(root / "cv-corpus-*" / "en" / "test.tsv", "the Common Voice English test list")
    return max(releases, key=lambda d: _version_key(d.name)) / "en"


def list_test(roots: Sequence[Path]) -> Listing:
    english = find_english(Path(roots[0]))
    tsv = english / "test.tsv"
    segments = []
    for number, row in read_tsv(tsv, COLUMNS):
        client, clip, sentence = (row[name] for name in COLUMNS)
        if not client or not clip:
            raise CorpusFormatError(tsv, number, "expected a client_id and a clip path")
        audio = english / "clips" / clip
        if not audio.is_file():
            raise CorpusNotFound(audio, f"the clip named in {tsv}:{number}")
        segments.append(Segment(f"{client}-{Path(clip).stem}", client, audio, sentence))
    return Listing(segments, [tsv])
