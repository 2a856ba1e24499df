"""Common Voice, FLEURS and VoxPopuli test sets prepared from fixture trees in their real layouts
(MP3 at 48 kHz, WAV at 16 kHz, Ogg Vorbis at 16 kHz)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
from corpus_fixtures import tone

from espnet_omni.corpora.test_sets import prepare_test_sets

CV_HEADER_NEW = "client_id path sentence_id sentence sentence_domain up_votes down_votes age gender accents variant locale segment"
CV_HEADER_OLD = "client_id path sentence up_votes down_votes age gender accents locale segment"


def read_table(path: Path) -> dict:
    return dict(line.split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines())


def read_cut(data: Path, utt: str) -> np.ndarray:
    samples, rate = soundfile.read(data / "audio" / f"{utt}.flac", dtype="float32")
    assert rate == 16000 and samples.ndim == 1
    return samples


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.corrcoef(a, b)[0, 1])


# ----------------------------------------------------------------------------- Common Voice


def write_cv_release(root: Path, name: str, header: str, rows: list) -> Path:
    """``rows``: (client_id, clip, sentence, seconds, freq); MP3 clips at 48 kHz."""
    english = root / name / "en"
    (english / "clips").mkdir(parents=True)
    columns = header.split()
    lines = ["\t".join(columns)]
    for client, clip, sentence, seconds, freq in rows:
        fields = dict.fromkeys(columns, "")
        fields.update(client_id=client, path=clip, sentence=sentence, up_votes="2", down_votes="0", locale="en")
        lines.append("\t".join(fields[c] for c in columns))
        if seconds:
            soundfile.write(english / "clips" / clip, tone(seconds, 48000, freq), 48000, format="MP3")
    (english / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return english


CV_ROWS = [  # quotes are part of the sentence: no CSV quoting in Common Voice TSVs
    ("9f8e7d", "common_voice_en_100.mp3", '"Hello," he said.', 1.37, 300.0),
    ("9f8e7d", "common_voice_en_101.mp3", 'A 5" pipe and "unbalanced quotes.', 0.91, 420.0),
    ("a1b2c3", "common_voice_en_102.mp3", "It's over there.", 2.0, 550.0),
]


def test_commonvoice_newest_release(tmp_path):
    corpus = tmp_path / "cv"
    # 9.0 sorts after 17.0 as text; the newest by version is 17.0. The delta release is never used.
    write_cv_release(corpus, "cv-corpus-9.0-2022-04-27", CV_HEADER_OLD, [("old", "common_voice_en_1.mp3", "Old.", 0.5, 300.0)])
    english = write_cv_release(corpus, "cv-corpus-17.0-2024-03-15", CV_HEADER_NEW, CV_ROWS)
    write_cv_release(corpus, "cv-corpus-18.0-delta-2024-06-14", CV_HEADER_NEW, [("new", "common_voice_en_9.mp3", "Delta.", 0.5, 300.0)])
    outcome, = prepare_test_sets(["commonvoice_test"], {"COMMONVOICE": str(corpus)}, tmp_path / "data")
    assert outcome.status == "prepared", outcome
    data = tmp_path / "data" / "commonvoice_test"
    utts = {f"{row[0]}-{Path(row[1]).stem}": row for row in CV_ROWS}
    assert read_table(data / "text") == {utt: row[2] for utt, row in utts.items()}
    assert read_table(data / "utt2spk") == {utt: row[0] for utt, row in utts.items()}
    assert read_table(data / "spk2utt")["9f8e7d"] == "9f8e7d-common_voice_en_100 9f8e7d-common_voice_en_101"
    for utt, (_, clip, _, seconds, freq) in utts.items():
        cut = read_cut(data, utt)
        assert abs(cut.size - round(seconds * 16000)) <= 2  # 48 kHz -> 16 kHz, whole clip
        source = soxr.resample(tone(seconds, 48000, freq)[:, 0] / 32768.0, 48000, 16000)
        assert correlation(cut, source.astype(np.float32)) > 0.95  # lossy: same tone, not same samples
        assert read_table(data / "sources")[utt].split()[0] == str(english / "clips" / clip)


def test_commonvoice_root_may_be_the_language_folder(tmp_path):
    english = write_cv_release(tmp_path / "cv", "cv-corpus-17.0-2024-03-15", CV_HEADER_NEW, CV_ROWS[:1])
    outcome, = prepare_test_sets(["commonvoice_test"], {"COMMONVOICE": str(english)}, tmp_path / "data")
    assert outcome.status == "prepared", outcome
    assert list(read_table(tmp_path / "data" / "commonvoice_test" / "text")) == ["9f8e7d-common_voice_en_100"]


def test_commonvoice_missing(tmp_path):
    (tmp_path / "cv" / "cv-corpus-17.0-2024-03-15" / "fr").mkdir(parents=True)
    outcome, = prepare_test_sets(["commonvoice_test"], {"COMMONVOICE": str(tmp_path / "cv")}, tmp_path / "data")
    assert outcome.status == "skipped"
    assert str(tmp_path / "cv" / "cv-corpus-*" / "en" / "test.tsv") in outcome.detail


@pytest.mark.parametrize("break_it, where", [
    (lambda lines: ["client_id\tpath\ttext"] + lines[1:], "test.tsv:1"),  # no sentence column
    (lambda lines: lines[:2] + ["9f8e7d\tcommon_voice_en_101.mp3"] + lines[3:], "test.tsv:3"),  # short row
    (lambda lines: lines[:3] + [lines[3].replace("a1b2c3", "")], "test.tsv:4"),  # no client_id
])
def test_commonvoice_malformed(tmp_path, break_it, where):
    english = write_cv_release(tmp_path / "cv", "cv-corpus-17.0-2024-03-15", CV_HEADER_NEW, CV_ROWS)
    tsv = english / "test.tsv"
    tsv.write_text("\n".join(break_it(tsv.read_text().splitlines())) + "\n")
    outcome, = prepare_test_sets(["commonvoice_test"], {"COMMONVOICE": str(tmp_path / "cv")}, tmp_path / "data")
    assert outcome.status == "skipped"
    assert f"{english / where}" in outcome.detail
    assert not (tmp_path / "data" / "commonvoice_test").exists()


def test_commonvoice_missing_clip_is_named(tmp_path):
    english = write_cv_release(tmp_path / "cv", "cv-corpus-17.0-2024-03-15", CV_HEADER_NEW, CV_ROWS)
    (english / "clips" / "common_voice_en_101.mp3").unlink()
    outcome, = prepare_test_sets(["commonvoice_test"], {"COMMONVOICE": str(tmp_path / "cv")}, tmp_path / "data")
    assert outcome.status == "skipped"
    assert str(english / "clips" / "common_voice_en_101.mp3") in outcome.detail
    assert f"{english / 'test.tsv'}:3" in outcome.detail


# ----------------------------------------------------------------------------- FLEURS

FLEURS_ROWS = [  # (id, file_name, raw_transcription, transcription, seconds): ids 1906 read twice
    ("1906", "10004088536354799741.wav", "The Amazon River is the second longest river on Earth.",
     "the amazon river is the second longest river on earth", 1.2),
    ("1906", "1000456987123.wav", "The Amazon River is the second longest river on Earth.",
     "the amazon river is the second longest river on earth", 0.8),
    ("77", "998877665544.wav", 'He said "no", in 1984.', "he said no in nineteen eighty four", 1.5),
]


def write_fleurs(root: Path, rows=FLEURS_ROWS, extract: bool = True) -> Path:
    english = root / "en_us"
    (english / "audio" / "test").mkdir(parents=True)
    lines = []
    for n, (sid, name, raw, norm, seconds) in enumerate(rows):
        samples = tone(seconds, 16000, 300.0 + 100 * n, seed=n)
        soundfile.write(english / "audio" / "test" / name, samples, 16000, subtype="PCM_16")
        chars = " ".join("|".join(norm.split())) + " |"
        lines.append("\t".join([sid, name, raw, norm, chars, str(samples.shape[0]), "FEMALE" if n % 2 else "MALE"]))
    (english / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if not extract:  # as the dataset repository ships it: audio/test.tar.gz
        import tarfile

        with tarfile.open(english / "audio" / "test.tar.gz", "w:gz") as tar:
            tar.add(english / "audio" / "test", arcname="test")
        for wav in (english / "audio" / "test").iterdir():
            wav.unlink()
        (english / "audio" / "test").rmdir()
    return english


def test_fleurs_test(tmp_path):
    english = write_fleurs(tmp_path / "fleurs")
    with open(english / "test.tsv", "a") as tsv:  # a repeated row: one utterance, as the dataset's loader
        tsv.write((english / "test.tsv").read_text().splitlines()[0] + "\n")
    outcome, = prepare_test_sets(["fleurs_test"], {"FLEURS": str(tmp_path / "fleurs")}, tmp_path / "data")
    assert outcome.status == "prepared", outcome
    data = tmp_path / "data" / "fleurs_test"
    stems = [Path(name).stem for _, name, *_ in FLEURS_ROWS]
    assert read_table(data / "text") == {stem: raw for stem, (_, _, raw, *_) in zip(stems, FLEURS_ROWS)}
    assert read_table(data / "utt2spk") == {stem: stem for stem in stems}
    for stem, (_, name, *_) in zip(stems, FLEURS_ROWS):
        cut = read_cut(data, stem)
        source, _ = soundfile.read(english / "audio" / "test" / name, dtype="float32")
        np.testing.assert_array_equal(cut, source)  # 16 kHz PCM in, 16-bit FLAC out: lossless


def test_fleurs_repository_layout_and_tarball(tmp_path):
    english = write_fleurs(tmp_path / "fleurs" / "data", extract=False)  # a clone of google/fleurs
    outcome, = prepare_test_sets(["fleurs_test"], {"FLEURS": str(tmp_path / "fleurs")}, tmp_path / "data")
    assert outcome.status == "skipped"
    assert str(english / "audio" / "test.tar.gz") in outcome.detail and "tar -xzf" in outcome.detail


def test_fleurs_missing(tmp_path):
    (tmp_path / "fleurs").mkdir()
    outcome, = prepare_test_sets(["fleurs_test"], {"FLEURS": str(tmp_path / "fleurs")}, tmp_path / "data")
    assert outcome.status == "skipped"
    assert str(tmp_path / "fleurs" / "en_us" / "test.tsv") in outcome.detail


def test_fleurs_malformed(tmp_path):
    english = write_fleurs(tmp_path / "fleurs")
    lines = (english / "test.tsv").read_text().splitlines()
    lines[1] = "\t".join(lines[1].split("\t")[:6])  # gender column lost
    (english / "test.tsv").write_text("\n".join(lines) + "\n")
    outcome, = prepare_test_sets(["fleurs_test"], {"FLEURS": str(english)}, tmp_path / "data")
    assert outcome.status == "skipped"
    assert f"{english / 'test.tsv'}:2" in outcome.detail and "expected 7" in outcome.detail


# ----------------------------------------------------------------------------- VoxPopuli

VP_HEADER = "id raw_text normalized_text speaker_id split gender is_gold_transcript accent"
VP_ROWS = [  # (id, raw_text, normalized_text, speaker_id, seconds)
    ("20180206-0900-PLENARY-15-en_20180206-16:10:06_5", "", "the commission has made its proposal", "119431", 1.3),
    ("20180206-0900-PLENARY-15-en_20180206-16:10:06_6", "Thank you, Mr President.", "thank you mister president",
     "119431", 0.7),
    ("20191024-0900-PLENARY-7-en_20191024-09:12:40_1", "", "we must act now", "", 1.1),
    ("20191024-0900-PLENARY-7-en_20191024-09:14:02_2", "", "", "4557", 0.6),  # no text: left out
]


def write_voxpopuli(root: Path) -> Path:
    english = root / "transcribed_data" / "en"
    lines = ["\t".join(VP_HEADER.split())]
    for n, (utt, raw, norm, speaker, seconds) in enumerate(VP_ROWS):
        (english / utt[:4]).mkdir(parents=True, exist_ok=True)
        soundfile.write(english / utt[:4] / f"{utt}.ogg", tone(seconds, 16000, 350.0 + 90 * n, seed=n), 16000,
                        format="OGG", subtype="VORBIS")
        lines.append(f"{utt}\t{raw}\t{norm}\t{speaker}\ttest\tfemale\tTrue\tNone")
    (english / "asr_test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return english


def test_voxpopuli_test(tmp_path):
    write_voxpopuli(tmp_path / "vp")
    outcome, = prepare_test_sets(["voxpopuli_test"], {"VOXPOPULI": str(tmp_path / "vp")}, tmp_path / "data")
    assert outcome.status == "prepared", outcome
    data = tmp_path / "data" / "voxpopuli_test"
    expected = {f"{spk or 'unknown'}-{utt}": (norm, spk or "unknown", n, seconds)
                for n, (utt, _, norm, spk, seconds) in enumerate(VP_ROWS) if norm}
    assert read_table(data / "text") == {utt: norm for utt, (norm, *_) in expected.items()}
    assert read_table(data / "utt2spk") == {utt: spk for utt, (_, spk, *_) in expected.items()}
    for utt, (_, _, n, seconds) in expected.items():
        cut = read_cut(data, utt)
        assert cut.size == round(seconds * 16000)
        assert correlation(cut, tone(seconds, 16000, 350.0 + 90 * n, seed=n)[:, 0] / 32768.0) > 0.99


def test_voxpopuli_missing(tmp_path):
    (tmp_path / "vp" / "transcribed_data").mkdir(parents=True)
    outcome, = prepare_test_sets(["voxpopuli_test"], {"VOXPOPULI": str(tmp_path / "vp")}, tmp_path / "data")
    assert outcome.status == "skipped"
    assert str(tmp_path / "vp" / "transcribed_data" / "en" / "asr_test.tsv") in outcome.detail


def test_voxpopuli_malformed_and_missing_audio(tmp_path):
    english = write_voxpopuli(tmp_path / "vp")
    tsv = english / "asr_test.tsv"
    lines = tsv.read_text().splitlines()
    tsv.write_text("\n".join([lines[0].replace("normalized_text", "text")] + lines[1:]) + "\n")
    outcome, = prepare_test_sets(["voxpopuli_test"], {"VOXPOPULI": str(english)}, tmp_path / "data")
    assert outcome.status == "skipped" and f"{tsv}:1" in outcome.detail

    tsv.write_text("\n".join(lines) + "\n")
    missing = english / "2019" / f"{VP_ROWS[2][0]}.ogg"
    missing.unlink()
    outcome, = prepare_test_sets(["voxpopuli_test"], {"VOXPOPULI": str(english)}, tmp_path / "data")
    assert outcome.status == "skipped" and str(missing) in outcome.detail and f"{tsv}:4" in outcome.detail
