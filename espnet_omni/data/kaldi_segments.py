"""ESPnet data type ``kaldi_segments``: utterances cut from long recordings by a Kaldi
``segments`` file, read without copying or decoding the whole recording.

A data dir of this kind holds::

    wav.scp    <recording-id> <audio path>          (one line per recording)
    segments   <utt-id> <recording-id> <start> <end>  (seconds; end -1: to the end of the file)
    text, utt2spk, spk2utt, utt2dur                  (per utterance, as usual)

A data dir that has a ``segments`` file is read by ESPnet with
``<dir>/segments,speech,kaldi_segments`` in ``--{train,valid}_data_path_and_name_and_type`` and
``asr_inference``'s ``--data_path_and_name_and_type`` (the file argument is the segments file;
the recordings are looked up in the ``wav.scp`` beside it), and its keys (for splitting and
``--key_file``) are the first column of ``segments``. ``import espnet_omni`` registers the type
into ``espnet2.train.dataset.DATA_TYPES`` (see :mod:`espnet_omni.registration`); ESPnet's
``IterableESPnetDataset`` (inference, ``collect_stats``) hands types it does not know to
``ESPnetDataset``, which reads that table, so the one registration serves training,
``collect_stats``, ``asr_inference`` and :mod:`espnet_omni.greedy_ctc`.

Each read seeks to the segment and decodes only its frames (libsndfile seeks in FLAC and WAV).
At most ``max_open`` recordings are held open (least recently used closed first), per process:
handles opened before a DataLoader forks its workers are not shared with them. The index keeps
one small entry per utterance (id, recording number, start, end) in compact arrays.
"""

import array
import collections
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import soundfile

NAME = "kaldi_segments"


class SegmentsError(ValueError):
    """A malformed segments or wav.scp line, or a segment the audio cannot give; names file:line."""


def read_wav_scp(path: Path) -> Dict[str, str]:
    """``{recording id: audio path}`` of a wav.scp with plain paths."""
    recordings: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            parts = line.split(maxsplit=1)
            if not parts:
                continue
            if len(parts) != 2 or parts[1].rstrip().endswith("|"):
                raise SegmentsError(f"{path}:{number}: expected '<recording-id> <audio path>'")
            recordings[parts[0]] = parts[1].strip()
    return recordings


class SegmentsReader(Mapping):
    """``reader[utt] -> (rate, samples)`` as ESPnet's ``SoundScpReader``: samples of shape (T,)
    for mono audio, (T, C) otherwise, in ``dtype`` (soundfile's float64 when None)."""

    def __init__(self, segments: Union[str, Path], dtype: Optional[str] = None, max_open: int = 16):
        self.segments = Path(segments)
        self.dtype = dtype or "float64"
        self.max_open = max_open
        wav_scp = self.segments.parent / "wav.scp"
        if not wav_scp.exists():
            raise SegmentsError(f"{wav_scp}: missing (the recordings of {self.segments})")
        recordings = read_wav_scp(wav_scp)
        rec_index = {rec: i for i, rec in enumerate(recordings)}
        self._paths: List[str] = list(recordings.values())
        self._keys: Dict[str, int] = {}
        self._rec = array.array("i")
        self._start = array.array("d")
        self._end = array.array("d")
        with open(self.segments, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    utt, rec, start, end = parts[0], parts[1], float(parts[2]), float(parts[3])
                    if len(parts) != 4:
                        raise ValueError
                except (IndexError, ValueError):
                    raise SegmentsError(
                        f"{self.segments}:{number}: expected '<utt-id> <recording-id> <start> <end>'"
                    ) from None
                if rec not in rec_index:
                    raise SegmentsError(f"{self.segments}:{number}: recording '{rec}' is not in {wav_scp}")
                if start < 0 or (end != -1 and end <= start):
                    raise SegmentsError(f"{self.segments}:{number}: segment {start}-{end} s is empty or negative")
                if utt in self._keys:
                    raise SegmentsError(f"{self.segments}:{number}: duplicate utterance id '{utt}'")
                self._keys[utt] = len(self._rec)
                self._rec.append(rec_index[rec])
                self._start.append(start)
                self._end.append(end)
        self._open_files: "collections.OrderedDict[int, soundfile.SoundFile]" = collections.OrderedDict()
        self._pid = os.getpid()

    def _file(self, rec: int) -> soundfile.SoundFile:
        if self._pid != os.getpid():  # a forked worker: the parent's handles share its offsets
            self._open_files = collections.OrderedDict()
            self._pid = os.getpid()
        handle = self._open_files.get(rec)
        if handle is not None:
            self._open_files.move_to_end(rec)
            return handle
        try:
            handle = soundfile.SoundFile(self._paths[rec])
        except Exception as err:  # soundfile.LibsndfileError, FileNotFoundError, ...
            raise SegmentsError(f"{self._paths[rec]}: cannot read audio ({err})") from err
        self._open_files[rec] = handle
        while len(self._open_files) > self.max_open:
            self._open_files.popitem(last=False)[1].close()
        return handle

    def get_path(self, key: str) -> Tuple[str, float, float]:
        """(recording path, start, end) of an utterance."""
        i = self._keys[key]
        return self._paths[self._rec[i]], self._start[i], self._end[i]

    def __getitem__(self, key: str) -> Tuple[int, np.ndarray]:
        i = self._keys[key]
        audio = self._file(self._rec[i])
        rate = audio.samplerate
        first = int(round(self._start[i] * rate))
        last = audio.frames if self._end[i] == -1 else min(int(round(self._end[i] * rate)), audio.frames)
        if first >= last:
            raise SegmentsError(
                f"{self.segments}: '{key}' ({self._start[i]}-{self._end[i]} s) lies past the end of "
                f"{audio.name} ({audio.frames / rate:.3f} s)"
            )
        audio.seek(first)
        samples = audio.read(last - first, dtype=self.dtype, always_2d=False)
        return rate, samples

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __contains__(self, key) -> bool:
        return key in self._keys

    def close(self) -> None:
        for handle in self._open_files.values():
            handle.close()
        self._open_files.clear()

    def __getstate__(self):  # open handles do not travel to other processes
        state = self.__dict__.copy()
        state["_open_files"] = collections.OrderedDict()
        return state


def kaldi_segments_loader(path: str, float_dtype: Optional[str] = None, allow_multi_rates: bool = False):
    """The ``DATA_TYPES`` entry's function: a Mapping ``utt -> samples`` as ESPnet's ``sound``
    loader returns (ESPnet's adapter turns ``(rate, samples)`` into samples and checks rates)."""
    from espnet2.train.dataset import AdapterForSoundScpReader

    return AdapterForSoundScpReader(SegmentsReader(path, dtype=float_dtype), allow_multi_rates=allow_multi_rates)


DATA_TYPE = dict(
    func=kaldi_segments_loader,
    kwargs=["float_dtype", "allow_multi_rates"],
    help="A Kaldi data dir's segments file; the recordings are read from the wav.scp beside it "
    "(espnet-omni)."
    "\n\n"
    "   utterance_id_a recording_id_1 0.00 4.56\n"
    "   utterance_id_b recording_id_1 4.56 9.80\n"
    "   ...",
)
