"""TED-LIUM 3 legacy test and WSJ nov92, prepared from fixture trees in the official layouts."""

from pathlib import Path

import numpy as np
import soundfile
from corpus_fixtures import tone, write_sphere

from espnet_omni.corpora.audio import AudioFile
from espnet_omni.corpora.test_sets import prepare_test_sets
from espnet_omni.corpora.wsj import normalize_transcript

RATE = 16000


def read_table(path: Path) -> dict:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def read_flac(path: Path) -> np.ndarray:
    samples, rate = soundfile.read(path, dtype="int16")
    assert rate == RATE and samples.ndim == 1
    return samples


# --- TED-LIUM 3 -------------------------------------------------------------------------------

TALKS = {
    "AimeeMullins_2009P": (
        "AimeeMullins_2009P 1 AimeeMullins_2009P 0.00 0.35 <o,f0,female> ignore_time_segment_in_scoring\n"
        "AimeeMullins_2009P 1 AimeeMullins_2009P 0.35 1.82 <o,f0,female> i 'd like <sil> to share {NOISE} it 's\n"
        "AimeeMullins_2009P 1 inter_segment_gap 1.82 2.01 <o,f0,unknown> ignore_time_segment_in_scoring\n"
        "AimeeMullins_2009P 1 AimeeMullins_2009P 2.01 2.93 <o,f0,female> we 're the students ' work\n"
    ),
    "BillGates_2010": "BillGates_2010 1 BillGates_2010 1.10 2.50 <o,f0,male> <sil> they 've done it <sil>\n",
}


def write_tedlium(root: Path) -> dict:
    test = root / "TEDLIUM_release-3" / "legacy" / "test"
    audio = {}
    for seed, (talk, stm) in enumerate(TALKS.items()):
        audio[talk] = tone(3.0, RATE, freq=200.0 + 100 * seed, seed=seed)[:, 0]
        write_sphere(test / "sph" / f"{talk}.sph", audio[talk], RATE, coding="pcm")
        (test / "stm").mkdir(parents=True, exist_ok=True)
        (test / "stm" / f"{talk}.stm").write_text(stm)
    return audio


def test_tedlium3_test_segments_text_and_audio(tmp_path):
    audio = write_tedlium(tmp_path / "db")
    [outcome] = prepare_test_sets(["tedlium3_test"], {"TEDLIUM3": str(tmp_path / "db")}, tmp_path / "data")
    assert outcome.status == "prepared", outcome.detail
    out = tmp_path / "data" / "tedlium3_test"
    assert read_table(out / "text") == {
        "AimeeMullins_2009P-0000035-0000182": "i'd like to share it's",
        "AimeeMullins_2009P-0000201-0000293": "we're the students ' work",
        "BillGates_2010-0000110-0000250": "they've done it",
    }
    assert read_table(out / "utt2spk") == {
        "AimeeMullins_2009P-0000035-0000182": "AimeeMullins_2009P",
        "AimeeMullins_2009P-0000201-0000293": "AimeeMullins_2009P",
        "BillGates_2010-0000110-0000250": "BillGates_2010",
    }
    for utt, path in read_table(out / "wav.scp").items():
        talk, start, end = utt.rsplit("-", 2)
        first, last = int(start) * RATE // 100, int(end) * RATE // 100
        np.testing.assert_array_equal(read_flac(Path(path)), audio[talk][first:last])  # lossless cut, official times

    again = prepare_test_sets(["tedlium3_test"], {"TEDLIUM3": str(tmp_path / "db")}, tmp_path / "data")
    assert again[0].status == "up to date"


def test_tedlium3_missing_corpus_talk_audio_and_malformed_stm(tmp_path):
    db = {"TEDLIUM3": str(tmp_path / "db")}
    [missing] = prepare_test_sets(["tedlium3_test"], db, tmp_path / "data")
    assert missing.status == "skipped"
    assert str(tmp_path / "db" / "TEDLIUM_release-3" / "legacy" / "test" / "stm") in missing.detail

    write_tedlium(tmp_path / "db")
    test = tmp_path / "db" / "TEDLIUM_release-3" / "legacy" / "test"
    (test / "sph" / "BillGates_2010.sph").unlink()
    [no_audio] = prepare_test_sets(["tedlium3_test"], db, tmp_path / "data")
    assert no_audio.status == "skipped" and str(test / "sph" / "BillGates_2010.sph") in no_audio.detail

    stm = test / "stm" / "AimeeMullins_2009P.stm"
    stm.write_text(TALKS["AimeeMullins_2009P"] + "AimeeMullins_2009P 1 AimeeMullins_2009P 2.95 oops <o,f0,female> x\n")
    [malformed] = prepare_test_sets(["tedlium3_test"], db, tmp_path / "data")
    assert malformed.status == "skipped" and f"{stm}:5:" in malformed.detail
    assert not (tmp_path / "data" / "tedlium3_test").exists()


# --- WSJ nov92 --------------------------------------------------------------------------------

NDX = (
    ";; File: si_et_20.ndx\n"
    ";; Index for WSJ0 20K open vocabulary, non-verbalized punctuation, Nov'92 evaluation test\n"
    ";;\n"
    "11_14_1:wsj0/si_et_20/440/440c0201.wv1\n"
    "11_14_1:wsj0/si_et_20/440/440c0202\n"
    "11_14_1:wsj0/si_et_20/441/441c0201.wv1\n"
)
DOTS = {
    # beside the audio
    "11-14.1/wsj0/si_et_20/440/440c0200.dot": (
        "[loud_breath] The company's shares *rose* <and> fell \\%PERCENT . today [door_slam] (440c0201)\n"
        "Analysts said I\\. B\\. M\\. isn\\'t [<door_slam] changing \\,COMMA plans ~ (440c0202)\n"
        "An utterance not in the test list (440c0203)\n"
    ),
    # elsewhere on the CDs: Kaldi finds .dot files anywhere
    "11-4.1/wsj0/transcrp/dots/si_et_20/441/441c0200.dot": "[phone_ring/] Rates rose --DASH again [/phone_ring] (441c0201)\n",
}
WSJ_TEXT = {
    "440c0201": "The company's shares rose and fell PERCENT today",
    "440c0202": "Analysts said I. B. M. isn't changing ,COMMA plans",
    "441c0201": "Rates rose -DASH again",
}


def write_wsj(root: Path) -> dict:
    (root / "11-13.1" / "wsj0" / "doc" / "indices" / "test" / "nvp").mkdir(parents=True)
    (root / "11-13.1" / "wsj0" / "doc" / "indices" / "test" / "nvp" / "si_et_20.ndx").write_text(NDX)
    audio = {}
    for seed, utt in enumerate(WSJ_TEXT):
        audio[utt] = tone(1.0 + 0.25 * seed, RATE, freq=300.0 + 50 * seed, seed=seed)[:, 0]
        write_sphere(root / "11-14.1" / "wsj0" / "si_et_20" / utt[:3] / f"{utt}.wv1", audio[utt], RATE, "shorten")
    for path, text in DOTS.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return audio


def test_shorten_wv1_reads_back_exactly(tmp_path):
    samples = tone(1.3, RATE, seed=3)[:, 0]
    path = write_sphere(tmp_path / "440c0201.wv1", samples, RATE, "shorten")
    with AudioFile(path) as audio:
        assert audio.sample_rate == RATE and audio.frames == samples.size
        np.testing.assert_array_equal(audio.read(), samples.astype(np.float32) / 32768)


def test_wsj_eval92_ids_text_and_audio(tmp_path):
    audio = write_wsj(tmp_path / "wsj0")
    [outcome] = prepare_test_sets(["wsj_eval92"], {"WSJ0": str(tmp_path / "wsj0")}, tmp_path / "data")
    assert outcome.status == "prepared", outcome.detail
    out = tmp_path / "data" / "wsj_eval92"
    assert read_table(out / "text") == WSJ_TEXT
    assert read_table(out / "utt2spk") == {"440c0201": "440", "440c0202": "440", "441c0201": "441"}
    for utt, path in read_table(out / "wav.scp").items():
        np.testing.assert_array_equal(read_flac(Path(path)), audio[utt])


def test_wsj_transcript_conventions():
    assert normalize_transcript("[<door_slam] *Quote* <the> fell [door_slam>] \\.POINT five ~") == "Quote the fell POINT five"
    assert normalize_transcript("[loud_breath] . ~ [lip_smack]") == ""


def test_wsj_missing_cd_malformed_ndx_and_dot(tmp_path):
    root = tmp_path / "wsj0"
    db = {"WSJ0": str(root)}
    [missing] = prepare_test_sets(["wsj_eval92"], db, tmp_path / "data")
    assert missing.status == "skipped"
    assert str(root / "11-13.1" / "wsj0" / "doc" / "indices" / "test" / "nvp" / "si_et_20.ndx") in missing.detail

    write_wsj(root)
    ndx = root / "11-13.1" / "wsj0" / "doc" / "indices" / "test" / "nvp" / "si_et_20.ndx"
    ndx.write_text(NDX + "11_15_1:wsj0/si_et_20/442/442c0201\n")
    [no_cd] = prepare_test_sets(["wsj_eval92"], db, tmp_path / "data")
    assert no_cd.status == "skipped" and str(root / "11-15.1") in no_cd.detail and f"{ndx}:7" in no_cd.detail

    ndx.write_text(NDX + "wsj0/si_et_20/442/442c0201.wv1\n")
    [bad_ndx] = prepare_test_sets(["wsj_eval92"], db, tmp_path / "data")
    assert bad_ndx.status == "skipped" and f"{ndx}:7:" in bad_ndx.detail

    ndx.write_text(NDX)
    dot = root / "11-14.1" / "wsj0" / "si_et_20" / "440" / "440c0200.dot"
    dot.write_text(DOTS["11-14.1/wsj0/si_et_20/440/440c0200.dot"] + "no utterance id here\n")
    [bad_dot] = prepare_test_sets(["wsj_eval92"], db, tmp_path / "data")
    assert bad_dot.status == "skipped" and f"{dot}:4:" in bad_dot.detail

    dot.write_text(DOTS["11-14.1/wsj0/si_et_20/440/440c0200.dot"])
    (root / "11-4.1" / "wsj0" / "transcrp" / "dots" / "si_et_20" / "441" / "441c0200.dot").unlink()
    [no_dot] = prepare_test_sets(["wsj_eval92"], db, tmp_path / "data")
    assert no_dot.status == "skipped" and str(root / "11-14.1/wsj0/si_et_20/441/441c0200.dot") in no_dot.detail
    assert not (tmp_path / "data" / "wsj_eval92").exists()
