"""LibriSpeech: test-clean and test-other listed by lhotse's LibriSpeech recipe; the training
sets (960 h: train-clean-100 + train-clean-360 + train-other-500) and dev (dev-clean + dev-other)
streamed from the transcripts (see ``iter_part``).

``LIBRISPEECH`` holds ``LibriSpeech/<part>/<spk>/<chapter>/`` with ``<spk>-<chapter>-<n>.flac``
(16 kHz) and ``<spk>-<chapter>.trans.txt`` (``UTTID UPPER CASE TEXT``).
"""

from pathlib import Path
from typing import Iterator, List, Sequence

import soundfile

from espnet_omni.corpora.prepare import CorpusFormatError, Listing, Segment, require
from espnet_omni.corpora.train_dir import TrainListing, Utterance
from espnet_omni.extras import require_extra


def list_part(root: Path, part: str) -> Listing:
    prepare_librispeech = require_extra("lhotse.recipes", "Preparing LibriSpeech").prepare_librispeech
    part_dir = require(Path(root) / "LibriSpeech" / part, f"the LibriSpeech {part} folder")
    transcripts = sorted(part_dir.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise CorpusFormatError(part_dir, 0, "no <spk>/<chapter>/<spk>-<chapter>.trans.txt under it")
    manifests = prepare_librispeech(Path(root) / "LibriSpeech", dataset_parts=[part])[part]
    recordings = manifests["recordings"]
    segments = [
        Segment(
            utt_id=sup.id, speaker=sup.speaker, audio=Path(recordings[sup.recording_id].sources[0].source),
            text=sup.text, start=sup.start, end=None,
        )
        for sup in manifests["supervisions"]
    ]
    return Listing(segments, transcripts)


def list_test_clean(roots: Sequence[Path]) -> Listing:
    return list_part(roots[0], "test-clean")


def list_test_other(roots: Sequence[Path]) -> Listing:
    return list_part(roots[0], "test-other")


# Training parts. lhotse's prepare_librispeech builds every Recording and SupervisionSegment of
# a part in memory (RecordingSet/SupervisionSet) before returning: ~280k objects for the 960 h,
# so the training sets are streamed here from the transcripts instead, one chapter at a time.
TRAIN_960 = ("train-clean-100", "train-clean-360", "train-other-500")
DEV = ("dev-clean", "dev-other")


def _part_dir(root: Path, part: str) -> Path:
    return require(Path(root) / "LibriSpeech" / part, f"the LibriSpeech {part} folder")


def transcripts(root: Path, part: str) -> List[Path]:
    """The ``<spk>/<chapter>/<spk>-<chapter>.trans.txt`` files of a part, sorted (~2.5k for the
    largest part); CorpusError when the part is missing or has none."""
    part_dir = _part_dir(root, part)
    found = sorted(part_dir.glob("*/*/*.trans.txt"))
    if not found:
        raise CorpusFormatError(part_dir, 0, "no <spk>/<chapter>/<spk>-<chapter>.trans.txt under it")
    return found


def iter_part(root: Path, part: str) -> Iterator[Utterance]:
    """Every utterance of a part as its FLAC file, streamed chapter by chapter; the duration
    from the FLAC header. CorpusError naming the transcript line of a missing FLAC."""
    for trans in transcripts(root, part):
        with open(trans, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                fields = line.split(maxsplit=1)
                if not fields:
                    continue
                if len(fields) != 2:
                    raise CorpusFormatError(trans, number, "expected '<spk>-<chapter>-<n> TEXT'")
                utt, text = fields
                audio = trans.parent / f"{utt}.flac"
                try:
                    info = soundfile.info(str(audio))
                except Exception as err:  # soundfile.LibsndfileError, or a missing file
                    raise CorpusFormatError(trans, number, f"cannot read {audio} ({err})") from None
                yield Utterance(
                    utt_id=utt, speaker=utt.split("-", 1)[0], audio=audio, text=text.strip(),
                    duration=info.frames / info.samplerate, where=f"{trans}:{number}",
                )


def _listing(roots: Sequence[Path], parts: Sequence[str], description: str) -> TrainListing:
    root = roots[0]
    inputs = [t for part in parts for t in transcripts(root, part)]  # fails early on a missing part
    return TrainListing(
        utterances=lambda: (u for part in parts for u in iter_part(root, part)),
        inputs=inputs, segmented=False, description=description, roots=[Path(root)],
    )


def list_train_960(roots: Sequence[Path]) -> TrainListing:
    return _listing(roots, TRAIN_960, "LibriSpeech 960 h (" + " + ".join(TRAIN_960) + ")")


def list_dev(roots: Sequence[Path]) -> TrainListing:
    return _listing(roots, DEV, "LibriSpeech dev-clean + dev-other")
