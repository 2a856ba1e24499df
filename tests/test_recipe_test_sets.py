"""The benchmark test sets' framework: audio of every format at 16 kHz mono, Kaldi dirs cut at
segment boundaries, preparation skipped when its inputs are unchanged and atomic when it
fails, missing corpora reported by set with the path expected."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from corpus_fixtures import tone, write_librispeech, write_sphere
from espnet_omni.corpora.audio import AudioError, AudioFile
from espnet_omni.corpora.prepare import CorpusError, Listing, Segment, write_test_set
from espnet_omni.corpora.test_sets import TEST_SETS, prepare_test_sets
from espnet_omni.recipe.data_dir import validate


def read_table(path: Path) -> dict:
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines())


def test_registry_is_the_papers_eleven_columns_in_order():
    assert [t.label for t in TEST_SETS.values()] == [
        "AMI-IHM", "CHiME-6", "CommonVoice", "FLEURS", "CallHome", "Switchboard", "LibriSpeech test-clean",
        "LibriSpeech test-other", "WSJ nov92", "TED-LIUM 3", "VoxPopuli"]


@pytest.mark.parametrize("coding", ["pcm", "ulaw", "shorten"])
def test_sphere_two_channel_8khz_reads_one_channel_at_16khz(tmp_path, coding):
    samples = tone(2.0, 8000, freq=300.0, channels=2)
    path = write_sphere(tmp_path / "conv.sph", samples, 8000, coding)
    with AudioFile(path) as audio:
        assert (audio.sample_rate, audio.channels, audio.frames) == (8000, 2, 16000)
        left, right = audio.read(0.5, 1.5, channel=0), audio.read(0.5, 1.5, channel=1)
    assert left.shape == right.shape == (16000,)
    # Each side keeps its own speaker: the 300 Hz tone on A, the 600 Hz one on B.
    spectrum = [np.abs(np.fft.rfft(x)) for x in (left, right)]
    assert [int(np.argmax(s)) for s in spectrum] == [300, 600]
    if coding != "ulaw":  # lossless: the 8 kHz samples come back exactly before resampling
        with AudioFile(path) as audio:
            audio._file.seek(0)
            assert np.array_equal(audio._file.read(dtype="int16"), samples)


@pytest.mark.parametrize(
    "fmt,subtype,rate", [("MP3", None, 48000), ("OGG", "VORBIS", 16000), ("FLAC", "PCM_16", 44100)]
)
def test_compressed_formats_resample_to_16khz_at_the_segment_length(tmp_path, fmt, subtype, rate):
    path = tmp_path / f"clip.{fmt.lower()}"
    soundfile.write(path, tone(3.0, rate, freq=500.0), rate, format=fmt, subtype=subtype)
    with AudioFile(path) as audio:
        segment = audio.read(1.0, 2.5)
    assert abs(segment.shape[0] - 24000) <= 2
    assert int(np.argmax(np.abs(np.fft.rfft(segment[:16000])))) == 500


def test_segment_past_the_end_or_missing_channel_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, tone(1.0, 16000), 16000)
    with AudioFile(path) as audio:
        with pytest.raises(AudioError, match=f"{path}: segment 2.00-3.0 s is empty or past the end"):
            audio.read(2.0, 3.0)
        with pytest.raises(AudioError, match="channel 1 asked for, the file has 1"):
            audio.read(channel=1)
    (tmp_path / "bad.sph").write_bytes(b"NIST_1A\n   1024\nsample_coding -s4 pcm\nend_head\n".ljust(1024) + b"xx")
    with pytest.raises(AudioError, match="bad.sph: cannot read audio"):
        AudioFile(tmp_path / "bad.sph")


def test_librispeech_set_is_a_valid_kaldi_dir_with_the_official_ids_and_audio(tmp_path):
    written = write_librispeech(tmp_path / "corpora")
    db = {"LIBRISPEECH": str(tmp_path / "corpora")}
    outcomes = prepare_test_sets(["librispeech_test_clean"], db, tmp_path / "data")
    assert [o.status for o in outcomes] == ["prepared"]
    data = tmp_path / "data" / "librispeech_test_clean"
    durations = validate(data)
    assert sorted(durations) == sorted(written)
    text, utt2spk = read_table(data / "text"), read_table(data / "utt2spk")
    for utt, (words, samples) in written.items():
        assert text[utt] == words and utt2spk[utt] == utt.split("-")[0]
        audio, rate = soundfile.read(data / "audio" / f"{utt}.flac", dtype="int16")
        assert rate == 16000 and np.array_equal(audio, samples)
    assert (data / "spk2utt").read_text().splitlines()[0] == "1089 1089-134686-0000 1089-134686-0001"


def test_unchanged_inputs_are_not_prepared_again_and_a_changed_transcript_is(tmp_path):
    write_librispeech(tmp_path / "corpora")
    db, data = {"LIBRISPEECH": str(tmp_path / "corpora")}, tmp_path / "data"
    prepare_test_sets(["librispeech_test_clean"], db, data)
    flac = data / "librispeech_test_clean" / "audio" / "121-121726-0000.flac"
    before = flac.stat().st_mtime_ns
    assert prepare_test_sets(["librispeech_test_clean"], db, data)[0].status == "up to date"
    assert flac.stat().st_mtime_ns == before
    trans = tmp_path / "corpora" / "LibriSpeech" / "test-clean" / "121" / "121726" / "121-121726.trans.txt"
    trans.write_text(trans.read_text().replace("STEW", "SOUP"))
    os.utime(trans, ns=(before + 10**9, before + 10**9))
    assert prepare_test_sets(["librispeech_test_clean"], db, data)[0].status == "prepared"
    assert "SOUP" in read_table(data / "librispeech_test_clean" / "text")["121-121726-0000"]


def test_failed_preparation_keeps_the_set_prepared_before(tmp_path):
    source = tmp_path / "rec.wav"
    soundfile.write(source, tone(2.0, 16000), 16000)
    good = Listing([Segment("spk-a", "spk", source, "hello", 0.0, 1.0)])
    write_test_set("custom", good, tmp_path / "data")
    before = (tmp_path / "data" / "custom" / "text").read_text()
    bad = Listing([Segment("spk-a", "spk", source, "hello", 0.0, 1.0),
                   Segment("spk-b", "spk", source, "past", 5.0, 6.0)])
    with pytest.raises(CorpusError, match="utterance spk-b: .*rec.wav: segment 5.00-6.0 s"):
        write_test_set("custom", bad, tmp_path / "data")
    assert (tmp_path / "data" / "custom" / "text").read_text() == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["custom"]


def test_segments_are_cut_at_their_boundaries_and_ids_must_be_unique_and_speaker_prefixed(tmp_path):
    source = tmp_path / "rec.wav"
    samples = tone(3.0, 16000)
    soundfile.write(source, samples, 16000, subtype="PCM_16")
    listing = Listing([Segment("s1-0050-0125", "s1", source, "a b", 0.5, 1.25),
                       Segment("s1-0200-0300", "s1", source, "c", 2.0, 3.0),
                       Segment("s1-0000-0010", "s1", source, "  ", 0.0, 0.1)])  # no words: left out
    write_test_set("cut", listing, tmp_path / "data")
    data = tmp_path / "data" / "cut"
    assert list(read_table(data / "text")) == ["s1-0050-0125", "s1-0200-0300"]
    cut, _ = soundfile.read(data / "audio" / "s1-0050-0125.flac", dtype="int16")
    assert np.array_equal(cut, samples[8000:20000, 0])
    assert read_table(data / "sources")["s1-0050-0125"] == f"{source} - 0.500 1.250"
    assert read_table(data / "utt2dur") == {"s1-0050-0125": "0.750", "s1-0200-0300": "1.000"}
    with pytest.raises(CorpusError, match="utterance id 's1-x' is also given"):
        duplicated = Listing([Segment("s1-x", "s1", source, "a"), Segment("s1-x", "s1", source, "b")])
        write_test_set("dup", duplicated, tmp_path / "data")
    with pytest.raises(CorpusError, match="does not start with its speaker id 's2'"):
        write_test_set("spk", Listing([Segment("s1-x", "s2", source, "a")]), tmp_path / "data")


def test_missing_corpora_are_skipped_by_name_with_the_path_expected_and_the_others_prepared(tmp_path):
    write_librispeech(tmp_path / "corpora")
    db = {"LIBRISPEECH": str(tmp_path / "corpora"), "TEDLIUM3": "", "EVAL2000": str(tmp_path / "only_one")}
    outcomes = {o.name: o for o in prepare_test_sets(
        ["librispeech_test_other", "tedlium3_test", "swbd_eval2000", "librispeech_test_clean"], db, tmp_path / "data")}
    assert outcomes["librispeech_test_clean"].status == "prepared"
    other = outcomes["librispeech_test_other"]
    assert other.status == "skipped" and f"{tmp_path}/corpora/LibriSpeech/test-other (not found)" in other.detail
    assert outcomes["tedlium3_test"].detail == "TEDLIUM3: TEDLIUM3 is empty in db.sh"
    assert "names 1 folder(s), expected 2" in outcomes["swbd_eval2000"].detail
    assert not (tmp_path / "data" / "librispeech_test_other").exists()
