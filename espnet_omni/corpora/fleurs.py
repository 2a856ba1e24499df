"""FLEURS English (en_us) test set, from the files of the ``google/fleurs`` dataset repository.

``FLEURS`` holds ``en_us/`` (the repository's ``data/en_us/``; ``FLEURS`` may also name the
repository or ``en_us`` itself) with ``test.tsv`` (no header; tab-separated id, file_name,
raw_transcription, transcription, characters, num_samples, gender) and the 16 kHz WAV files in
``audio/test/<file_name>``, which the repository ships as ``audio/test.tar.gz``: extract it
there (``tar -xzf test.tar.gz`` in ``audio/``).

The TSV is read here: lhotse's recipe expects its own download layout (``<lang>/test/*.wav``
and ``metadata/<lang>/*.tsv``), reads train and dev as well, and keeps the normalised
``transcription``. The reference is ``raw_transcription`` (cased and punctuated; the scorer
normalises both sides). Several rows share an ``id`` (one sentence read by several speakers), so
the utterance id is the file name's stem. FLEURS names no speakers; as Kaldi's data preparation
guide advises for that case, each utterance is its own speaker.
"""

from collections.abc import Sequence
from pathlib import Path

from espnet_omni.corpora.prepare import CorpusError, CorpusFormatError, CorpusNotFound, Listing, Segment

FIELDS = "id, file_name, raw_transcription, transcription, characters, num_samples, gender"


def find_english(root: Path) -> Path:
    for folder in (root / "en_us", root / "data" / "en_us", root):
        if (folder / "test.tsv").is_file():
            return folder
    raise CorpusNotFound(root / "en_us" / "test.tsv", "the FLEURS English test list")


def list_test(roots: Sequence[Path]) -> Listing:
    english = find_english(Path(roots[0]))
    tsv = english / "test.tsv"
    audio_dir = english / "audio" / "test"
    if not audio_dir.is_dir():
        tarball = audio_dir.parent / "test.tar.gz"
        if tarball.is_file():
            raise CorpusError(f"{audio_dir} not found: extract {tarball} (tar -xzf test.tar.gz in {tarball.parent})")
        raise CorpusNotFound(audio_dir, "the FLEURS test audio folder (audio/test.tar.gz, extracted)")
    segments, seen = [], set()
    with open(tsv, "rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            # Seven fields, as the dataset's own loading script unpacks them.
            if len(fields) != 7 or not fields[1]:
                raise CorpusFormatError(tsv, number, f"expected 7 tab-separated fields ({FIELDS}), found {len(fields)}")
            file_name, text = fields[1], fields[2]
            if file_name in seen:  # the dataset's loader keys rows by file name: one example each
                continue
            seen.add(file_name)
            audio = audio_dir / file_name
            if not audio.is_file():
                raise CorpusNotFound(audio, f"the recording named in {tsv}:{number}")
            utt = Path(file_name).stem
            segments.append(Segment(utt, utt, audio, text))
    return Listing(segments, [tsv])
