"""AMI IHM eval and CHiME-6 eval, prepared from fixture trees in the corpora's own layouts."""

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from corpus_fixtures import tone

from espnet_omni.corpora.test_sets import prepare_test_sets

RATE = 16000
NITE = 'xmlns:nite="http://nite.sourceforge.net/"'


def read_table(path: Path) -> dict:
    return dict(line.rstrip("\n").split(" ", 1) for line in path.read_text().splitlines())


def assert_cut(data: Path, utt: str, source: np.ndarray, start: float, end: float) -> None:
    """The utterance's FLAC is 16 kHz mono and holds exactly ``source[start:end]`` (float, mono)."""
    samples, rate = soundfile.read(data / "audio" / f"{utt}.flac", dtype="float32")
    assert rate == RATE and samples.ndim == 1
    expected = source[round(start * RATE): round(end * RATE)]
    assert samples.shape[0] == expected.shape[0] == round((end - start) * RATE)
    np.testing.assert_allclose(samples, expected, atol=1.01 / 32768)


# ---------------------------------------------------------------------------------------------
# AMI: NXT annotations as in ami_public_manual_1.6.2.zip, headset WAVs as in amicorpus/.

def w(mtg, spk, n, text, start, end, **attrs):
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f'   <w nite:id="{mtg}.{spk}.words{n}" starttime="{start}" endtime="{end}"{extra}>{text}</w>'


def segment(mtg, spk, n, first, last, start, end):
    href = f"{mtg}.{spk}.words.xml#id({mtg}.{spk}.words{first})"
    href += f"..id({mtg}.{spk}.words{last})" if last != first else ""
    return (f'   <segment nite:id="{mtg}.sync.{n}" transcriber_start="{start}" transcriber_end="{end}">\n'
            f'      <nite:child href="{href}"/>\n   </segment>')


def xml_file(path: Path, root_id: str, body) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((
        '<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>\n'
        f'<nite:root nite:id="{root_id}" {NITE}>\n' + "\n".join(body) + "\n</nite:root>\n"
    ).encode("iso-8859-1"))


def make_ami(root: Path) -> dict:
    """EN2002a (eval; speaker A on headset 1, B on headset 0) and ES2002a (train, no audio)."""
    ann = root / "ami_public_manual_1.6.2"
    xml_file(ann / "corpusResources" / "meetings.xml", "meetings", [
        '   <meeting nite:id="EN2002a.meeting" observation="EN2002a" type="non-scenario" visibility="public">',
        '      <speaker nite:id="EN2002a.speaker.A" camera="" channel="1" global_name="FEO070" nxt_agent="A"/>',
        '      <speaker nite:id="EN2002a.speaker.B" camera="" channel="0" global_name="MEE071" nxt_agent="B"/>',
        "   </meeting>",
        '   <meeting nite:id="ES2002a.meeting" observation="ES2002a" type="scenario" visibility="public">',
        '      <speaker nite:id="ES2002a.speaker.A" camera="" channel="0" global_name="MEE006" nxt_agent="A"/>',
        "   </meeting>",
    ])
    m = "EN2002a"
    xml_file(ann / "words" / f"{m}.A.words.xml", f"{m}.A.words", [
        w(m, "A", 0, "Okay", 0.50, 0.80),
        w(m, "A", 1, ".", 0.80, 0.80, punc="true"),
        w(m, "A", 2, "So", 0.90, 1.10),
        f'   <vocalsound nite:id="{m}.A.words3" starttime="1.10" endtime="1.40" type="laugh"/>',
        w(m, "A", 4, "we", 1.40, 1.55),
        f'   <disfmarker nite:id="{m}.A.words5" starttime="1.55" endtime="1.55"/>',
        w(m, "A", 6, "th", 1.55, 1.70, trunc="true"),
        w(m, "A", 7, "the", 1.70, 1.85),
        w(m, "A", 8, "design", 1.85, 2.30),
        w(m, "A", 9, "?", 2.30, 2.30, punc="true"),
        f'   <vocalsound nite:id="{m}.A.words10" starttime="2.60" endtime="2.90" type="cough"/>',
        w(m, "A", 11, "Mm-hmm", 3.00, 3.40),
        w(m, "A", 12, ".", 3.40, 3.40, punc="true"),
    ])
    xml_file(ann / "segments" / f"{m}.A.segments.xml", f"{m}.A.segs", [
        segment(m, "A", 1, 0, 9, 0.45, 2.40),
        segment(m, "A", 2, 10, 10, 2.55, 2.95),  # a vocal sound only: no words, no utterance
        segment(m, "A", 3, 11, 12, 3.05, 3.30),  # the aligned word reaches past the transcriber's times
    ])
    # B: 32 words in one sentence, commas after words 10 (1.0 s) and 20 (1.5 s); one word past the audio's end.
    b_words, n = [], 0
    for i in range(1, 33):
        b_words.append(w(m, "B", n, f"w{i}", round(0.5 + (i - 1) * 0.05, 2), round(0.5 + i * 0.05, 2)))
        n += 1
        if i in (10, 20):
            b_words.append(w(m, "B", n, ",", round(0.5 + i * 0.05, 2), round(0.5 + i * 0.05, 2), punc="true"))
            n += 1
    b_words.append(w(m, "B", n, "late", 3.80, 4.30))
    xml_file(ann / "words" / f"{m}.B.words.xml", f"{m}.B.words", b_words)
    xml_file(ann / "segments" / f"{m}.B.segments.xml", f"{m}.B.segs", [
        segment(m, "B", 1, 0, n - 1, 0.50, 2.10),
        segment(m, "B", 2, n, n, 3.75, 4.30),
    ])
    xml_file(ann / "words" / "ES2002a.A.words.xml", "ES2002a.A.words", [w("ES2002a", "A", 0, "Hi", 1.0, 1.3)])
    xml_file(ann / "segments" / "ES2002a.A.segments.xml", "ES2002a.A.segs",
             [segment("ES2002a", "A", 1, 0, 0, 1.0, 1.3)])
    audio = {}
    for channel in (0, 1):
        samples = tone(4.0, RATE, freq=300.0 + 200 * channel, seed=channel)
        path = root / "amicorpus" / m / "audio" / f"{m}.Headset-{channel}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, samples, RATE, subtype="PCM_16")
        audio[channel] = samples[:, 0].astype(np.float32) / 32768
    return audio


A_SPK, B_SPK = "AMI_EN2002a_H01_FEO070", "AMI_EN2002a_H00_MEE071"
AMI_EXPECTED = {  # utt -> (start, end, text)
    f"{A_SPK}_0000050_0000080": (0.50, 0.80, "Okay"),
    f"{A_SPK}_0000080_0000230": (0.80, 2.30, "So we th the design"),
    f"{A_SPK}_0000300_0000340": (3.00, 3.40, "Mm-hmm"),
    f"{B_SPK}_0000050_0000150": (0.50, 1.50, " ".join(f"w{i}" for i in range(1, 21))),
    f"{B_SPK}_0000150_0000210": (1.50, 2.10, " ".join(f"w{i}" for i in range(21, 33))),
    f"{B_SPK}_0000380_0000400": (3.80, 4.00, "late"),  # clipped to the recording's end
}


def check_ami(data: Path, audio: dict) -> None:
    text = read_table(data / "text")
    assert text == {utt: t for utt, (_, _, t) in AMI_EXPECTED.items()}
    assert read_table(data / "utt2spk") == {utt: utt[: len(A_SPK)] for utt in AMI_EXPECTED}
    for utt, (start, end, _) in AMI_EXPECTED.items():
        assert_cut(data, utt, audio[1 if utt.startswith(A_SPK) else 0], start, end)


def test_ami_ihm_eval(tmp_path):
    audio = make_ami(tmp_path / "ami")
    outcomes = prepare_test_sets(["ami_ihm_eval"], {"AMI": str(tmp_path / "ami")}, tmp_path / "data")
    assert [o.status for o in outcomes] == ["prepared"], outcomes
    check_ami(tmp_path / "data" / "ami_ihm_eval", audio)
    again = prepare_test_sets(["ami_ihm_eval"], {"AMI": str(tmp_path / "ami")}, tmp_path / "data")
    assert again[0].status == "up to date"


def test_ami_annotations_zip_read_in_place(tmp_path):
    root = tmp_path / "ami"
    audio = make_ami(root)
    folder = root / "ami_public_manual_1.6.2"
    with zipfile.ZipFile(root / "ami_public_manual_1.6.2.zip", "w") as z:
        for path in sorted(folder.rglob("*.xml")):
            z.write(path, path.relative_to(folder).as_posix())
    shutil.rmtree(folder)
    outcomes = prepare_test_sets(["ami_ihm_eval"], {"AMI": str(root)}, tmp_path / "data")
    assert [o.status for o in outcomes] == ["prepared"], outcomes
    check_ami(tmp_path / "data" / "ami_ihm_eval", audio)
    assert sorted(p.name for p in root.iterdir()) == ["ami_public_manual_1.6.2.zip", "amicorpus"]  # nothing extracted


def test_ami_missing(tmp_path):
    (tmp_path / "ami").mkdir()
    outcome, = prepare_test_sets(["ami_ihm_eval"], {"AMI": str(tmp_path / "ami")}, tmp_path / "data")
    assert outcome.status == "skipped" and str(tmp_path / "ami" / "ami_public_manual_1.6.2") in outcome.detail
    make_ami(tmp_path / "ami")
    headset = tmp_path / "ami" / "amicorpus" / "EN2002a" / "audio" / "EN2002a.Headset-1.wav"
    headset.unlink()
    outcome, = prepare_test_sets(["ami_ihm_eval"], {"AMI": str(tmp_path / "ami")}, tmp_path / "data")
    assert outcome.status == "skipped" and str(headset) in outcome.detail
    assert not (tmp_path / "data" / "ami_ihm_eval").exists()


@pytest.mark.parametrize("file, old, new, where", [
    ("words/EN2002a.A.words.xml", "<w nite:id=\"EN2002a.A.words2\"", "<w nite:id=\"EN2002a.A.words2\"<", 5),
    ("segments/EN2002a.B.segments.xml", "id(EN2002a.B.words0)", "id(EN2002a.B.words99)", 4),
    ("segments/EN2002a.A.segments.xml", "words.xml#id", "words.xml#ID", 4),
    ("words/EN2002a.A.words.xml", 'starttime="0.9"', 'starttime="0:00:00.9"', 5),
    ("corpusResources/meetings.xml", 'channel="0" global_name="MEE071"', 'channel="x" global_name="MEE071"', 5),
])
def test_ami_malformed(tmp_path, file, old, new, where):
    make_ami(tmp_path / "ami")
    path = tmp_path / "ami" / "ami_public_manual_1.6.2" / file
    content = path.read_text(encoding="iso-8859-1")
    assert old in content
    path.write_text(content.replace(old, new, 1), encoding="iso-8859-1")
    outcome, = prepare_test_sets(["ami_ihm_eval"], {"AMI": str(tmp_path / "ami")}, tmp_path / "data")
    assert outcome.status == "skipped" and f"{path}:{where}:" in outcome.detail, outcome.detail
    assert "expected" in outcome.detail


# ---------------------------------------------------------------------------------------------
# CHiME-6: binaural worn-microphone WAVs and JSON transcripts.

def make_chime6(root: Path) -> dict:
    chime = root / "CHiME6"
    audio = {}
    for n, name in enumerate(("S01_P01", "S01_P02", "S21_P05")):
        samples = tone(4.0, RATE, freq=250.0 + 100 * n, channels=2, seed=n)
        path = chime / "audio" / "eval" / f"{name}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, samples, RATE, subtype="PCM_16")
        audio[name] = samples.astype(np.float32).mean(axis=1) / 32768
    # An array recording, which the worn-microphone set must not use.
    soundfile.write(chime / "audio" / "eval" / "S01_U01.CH1.wav", tone(4.0, RATE, seed=9), RATE, subtype="PCM_16")

    def entry(speaker, session, start, end, words):
        return {"end_time": end, "start_time": start, "words": words, "speaker": speaker,
                "ref": "U02", "location": "kitchen", "session_id": session}

    transcripts = chime / "transcriptions" / "eval"
    transcripts.mkdir(parents=True)
    (transcripts / "S01.json").write_text(json.dumps([
        entry("P01", "S01", "0:00:00.50", "0:00:01.80", "[noise] Hello, how are you? [laughs]"),
        entry("P02", "S01", "0:00:01.20", "0:00:02.40", "Fine [inaudible 0:00:02.00] thanks."),
        entry("P01", "S01", "0:00:02.50", "0:00:03.10", "My name is [redacted]."),
        entry("P02", "S01", "0:00:03.00", "0:00:03.50", "[laughs]"),
    ], indent=4))
    # CHiME-5's form: a time per device; the speaker's own worn microphone's applies.
    times = {"original": "0:00:01.00", "P05": "0:00:01.10", "U01": "0:00:01.30"}
    ends = {"original": "0:00:02.50", "P05": "0:00:02.60", "U01": "0:00:02.80"}
    (transcripts / "S21.json").write_text(json.dumps([entry("P05", "S21", times, ends, "Okay.")], indent=4))
    return audio


CHIME_EXPECTED = {
    "P01_S01-0000050-0000180": ("S01_P01", 0.50, 1.80, "Hello, how are you?"),
    "P02_S01-0000120-0000240": ("S01_P02", 1.20, 2.40, "Fine thanks."),
    "P05_S21-0000110-0000260": ("S21_P05", 1.10, 2.60, "Okay."),
}


def test_chime6_eval(tmp_path):
    audio = make_chime6(tmp_path)
    outcomes = prepare_test_sets(["chime6_eval"], {"CHIME6": str(tmp_path)}, tmp_path / "data")
    assert [o.status for o in outcomes] == ["prepared"], outcomes
    data = tmp_path / "data" / "chime6_eval"
    assert read_table(data / "text") == {utt: t for utt, (_, _, _, t) in CHIME_EXPECTED.items()}
    assert read_table(data / "utt2spk") == {utt: utt.split("-")[0] for utt in CHIME_EXPECTED}
    for utt, (recording, start, end, _) in CHIME_EXPECTED.items():
        assert_cut(data, utt, audio[recording], start, end)


def test_chime6_missing(tmp_path):
    outcome, = prepare_test_sets(["chime6_eval"], {"CHIME6": str(tmp_path)}, tmp_path / "data")
    assert outcome.status == "skipped" and str(tmp_path / "CHiME6") in outcome.detail
    make_chime6(tmp_path)
    (tmp_path / "CHiME6" / "transcriptions" / "eval" / "S21.json").unlink()
    outcome, = prepare_test_sets(["chime6_eval"], {"CHIME6": str(tmp_path)}, tmp_path / "data")
    assert outcome.status == "skipped" and "S21.json" in outcome.detail
    make_chime6(tmp_path / "again")
    worn = tmp_path / "again" / "CHiME6" / "audio" / "eval" / "S01_P02.wav"
    worn.unlink()
    outcome, = prepare_test_sets(["chime6_eval"], {"CHIME6": str(tmp_path / "again")}, tmp_path / "data")
    assert outcome.status == "skipped" and str(worn) in outcome.detail


@pytest.mark.parametrize("old, new, where", [
    ('"speaker": "P02"', '"talker": "P02"', 11),  # the second utterance's object starts on line 11
    ('"start_time": "0:00:01.20"', '"start_time": "1.20"', 11),
    ('"words": "Fine', '"words" "Fine', 14),
])
def test_chime6_malformed(tmp_path, old, new, where):
    make_chime6(tmp_path)
    path = tmp_path / "CHiME6" / "transcriptions" / "eval" / "S01.json"
    content = path.read_text()
    assert old in content
    path.write_text(content.replace(old, new, 1))
    outcome, = prepare_test_sets(["chime6_eval"], {"CHIME6": str(tmp_path)}, tmp_path / "data")
    assert outcome.status == "skipped" and f"{path}:{where}:" in outcome.detail, outcome.detail
