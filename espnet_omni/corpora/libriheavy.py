"""Libriheavy: LibriLight's audio books cut into utterances, from the release's lhotse manifests.

``LIBRIHEAVY`` holds the release's cut manifests ``libriheavy_cuts_{small,medium,large,dev}.jsonl.gz``
(one lhotse ``MonoCut`` per line, with its ``recording`` and one supervision); ``LIBRILIGHT``
holds the LibriLight audio as its archives unpack, ``{small,medium,large}/<spk>/<book>/<file>.flac``.
A manifest's recording sources are relative paths such as
``download/librilight/small/100/<book>/<file>.flac`` (where the release's scripts downloaded
LibriLight); they are resolved against ``LIBRILIGHT``, with or without that
``download/librilight/`` prefix.

The release's manifests are disjoint, one per LibriLight archive (small ~0.5k h, medium
~5k h, large ~51k h); its training subsets are cumulative: ``libriheavy_medium`` reads the
small and medium manifests, ``libriheavy_large`` (the paper's ~50k h) all three. A cut is one
utterance: ``segments`` gives its interval of the recording (no audio is copied). Its text is
the release's normalised form (``supervision.custom["texts"][1]``: upper case, no punctuation,
as LibriSpeech's transcripts), passed through :func:`librispeech_style`; ``texts[0]`` is the
cased, punctuated form.

Manifests are read lazily, one cut at a time (``lhotse.load_manifest_lazy``): memory does not
grow with the manifest.
"""

import re
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence, Tuple

from espnet_omni.corpora.prepare import CorpusFormatError, require
from espnet_omni.corpora.train_dir import TrainListing, Utterance
from espnet_omni.extras import require_extra

SUBSETS = ("small", "medium", "large", "dev")
# Where the release's scripts put LibriLight; stripped when LIBRILIGHT is LibriLight itself.
SOURCE_PREFIX = PurePosixPath("download/librilight")

_NOT_WORD = re.compile(r"[^\w' ]+")


def librispeech_style(text: str) -> str:
    """Upper case, punctuation other than apostrophes dropped, single spaces."""
    return " ".join(_NOT_WORD.sub(" ", text.upper().replace("_", " ")).split())


def manifest_path(root: Path, subset: str) -> Path:
    return Path(root) / f"libriheavy_cuts_{subset}.jsonl.gz"


def kaldi_id(value: str) -> str:
    """A manifest id as a Kaldi id: '/' (LibriLight's folders) become '-'."""
    return value.replace("/", "-")


def resolve_source(source: str, librilight: Path) -> Path:
    """The audio path a manifest's source names, under ``librilight`` (absolute sources as is)."""
    path = PurePosixPath(source)
    if path.is_absolute():
        return Path(path)
    if path.parts[:len(SOURCE_PREFIX.parts)] == SOURCE_PREFIX.parts:
        stripped = Path(librilight, *path.parts[len(SOURCE_PREFIX.parts):])
        if stripped.exists() or not Path(librilight, path).exists():
            return stripped
    return Path(librilight, path)


def _cuts(manifest: Path) -> Iterator[Tuple[int, object]]:
    """(line, cut) of a manifest, lazily; CorpusFormatError naming the line that does not parse."""
    load_manifest_lazy = require_extra("lhotse", "Reading Libriheavy's manifests").load_manifest_lazy
    cuts = iter(load_manifest_lazy(manifest))
    number = 0
    while True:
        number += 1
        try:
            cut = next(cuts)
        except StopIteration:
            return
        except Exception as err:  # json.JSONDecodeError, KeyError, ... from lhotse's deserialiser
            raise CorpusFormatError(manifest, number, f"not a lhotse cut ({type(err).__name__}: {err})") from None
        yield number, cut


def _text(supervision) -> str:
    texts = (supervision.custom or {}).get("texts")
    if texts:
        return librispeech_style(texts[1] if len(texts) > 1 else texts[0])
    return librispeech_style(supervision.text or "")


def _speaker_of(recording_id: str) -> str:
    """The speaker folder of a LibriLight recording id (``<subset>/<spk>/<book>/<file>``)."""
    parts = recording_id.split("/")
    return parts[1] if len(parts) > 1 and parts[0] in SUBSETS else parts[0]


def iter_manifest(manifest: Path, librilight: Path) -> Iterator[Utterance]:
    """The utterances of a Libriheavy manifest, one per cut, as the manifest streams.

    Raises CorpusFormatError naming the manifest's line of a cut without exactly one
    supervision, or whose recording is not under ``librilight``.
    """
    last_recording, last_source, audio = None, None, None
    for number, cut in _cuts(manifest):
        if len(cut.supervisions) != 1:
            message = f"cut '{cut.id}' has {len(cut.supervisions)} supervisions, expected 1"
            raise CorpusFormatError(manifest, number, message)
        sup = cut.supervisions[0]
        recording = cut.recording
        if recording is None or not recording.sources:
            raise CorpusFormatError(manifest, number, f"cut '{cut.id}' names no recording")
        source = recording.sources[0].source
        if source != last_source:  # cuts of one recording follow each other: resolved once
            audio, last_source = resolve_source(source, librilight), source
        if recording.id != last_recording:
            if not audio.is_file():
                raise CorpusFormatError(manifest, number, f"recording '{recording.id}': expected {audio} (not found)")
            last_recording = recording.id
        start = cut.start + sup.start
        duration = min(sup.duration, cut.duration)
        speaker = sup.speaker or _speaker_of(recording.id)
        utt = kaldi_id(cut.id)
        if not utt.startswith(f"{speaker}-"):
            utt = f"{speaker}-{utt}"  # Kaldi's convention: utterance ids start with the speaker
        yield Utterance(
            utt_id=utt, speaker=speaker, audio=audio, text=_text(sup), duration=duration,
            where=f"{manifest}:{number}", recording=kaldi_id(recording.id), start=start, end=start + duration,
        )


def _listing(roots: Sequence[Path], subsets: Sequence[str]) -> TrainListing:
    """The utterances of the manifests of ``subsets``, one after the other."""
    libriheavy, librilight = Path(roots[0]), Path(roots[1])
    manifests = [require(manifest_path(libriheavy, s), f"the Libriheavy {s} manifest") for s in subsets]
    require(librilight, "the LibriLight audio folder")
    return TrainListing(
        utterances=lambda: (u for m in manifests for u in iter_manifest(m, librilight)),
        inputs=manifests, segmented=True, roots=[libriheavy, librilight],
        description=f"Libriheavy {'+'.join(subsets)} ({', '.join(map(str, manifests))})",
    )


def list_small(roots: Sequence[Path]) -> TrainListing:
    return _listing(roots, ["small"])


def list_medium(roots: Sequence[Path]) -> TrainListing:
    return _listing(roots, ["small", "medium"])


def list_large(roots: Sequence[Path]) -> TrainListing:
    return _listing(roots, ["small", "medium", "large"])


def list_dev(roots: Sequence[Path]) -> TrainListing:
    return _listing(roots, ["dev"])
