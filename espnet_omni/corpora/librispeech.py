"""LibriSpeech test-clean and test-other, listed by lhotse's LibriSpeech recipe.

``LIBRISPEECH`` holds ``LibriSpeech/<part>/<spk>/<chapter>/`` with ``<spk>-<chapter>-<n>.flac``
(16 kHz) and ``<spk>-<chapter>.trans.txt`` (``UTTID UPPER CASE TEXT``).
"""

from pathlib import Path
from typing import Sequence

from espnet_omni.corpora.prepare import CorpusFormatError, Listing, Segment, require
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
