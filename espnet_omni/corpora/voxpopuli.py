"""VoxPopuli English test set, as the official ``voxpopuli.get_asr_data`` script writes it.

``VOXPOPULI`` holds ``transcribed_data/en/`` (or names that folder itself) with ``asr_test.tsv``
(tab-separated, a header row: id, raw_text, normalized_text, speaker_id, split, gender and, in
newer versions of the script, is_gold_transcript, accent) and one 16 kHz Ogg Vorbis file per
utterance, ``<year>/<id>.ogg`` with year = the id's first four characters.

The TSV is read here: lhotse's recipe reads the uncut session recordings
(``raw_audios/<lang>/*.ogg``) and downloads the annotation file, so it cannot read this layout
offline. The utterance id is ``<speaker_id>-<id>`` (speaker first, as Kaldi sorts them).
"""

from collections.abc import Sequence
from pathlib import Path

from espnet_omni.corpora.prepare import CorpusFormatError, CorpusNotFound, Listing, Segment, read_tsv

# normalized_text, not raw_text: raw_text is empty in many rows, normalized_text is in all of
# them and is what lhotse's and SpeechBrain's VoxPopuli recipes use as the reference.
COLUMNS = ("id", "normalized_text", "speaker_id")


def find_english(root: Path) -> Path:
    for folder in (root / "transcribed_data" / "en", root):
        if (folder / "asr_test.tsv").is_file():
            return folder
    raise CorpusNotFound(root / "transcribed_data" / "en" / "asr_test.tsv", "the VoxPopuli English test list")


def list_test(roots: Sequence[Path]) -> Listing:
    english = find_english(Path(roots[0]))
    tsv = english / "asr_test.tsv"
    segments = []
    for number, row in read_tsv(tsv, COLUMNS):
        utt, text, speaker = (row[name] for name in COLUMNS)
        if len(utt) < 4:
            raise CorpusFormatError(
                tsv, number, "expected an id starting with its year (20180206-0900-PLENARY-15-en_20180206-16:10:06_5)"
            )
        audio = english / utt[:4] / f"{utt}.ogg"
        if not audio.is_file():
            raise CorpusNotFound(audio, f"the recording named in {tsv}:{number}")
        speaker = speaker or "unknown"  # an empty speaker_id would leave utt2spk without a speaker
        segments.append(Segment(f"{speaker}-{utt}", speaker, audio, text))
    return Listing(segments, [tsv])
