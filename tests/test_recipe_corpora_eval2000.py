"""Hub5'00 (eval2000) Switchboard and CallHome sets, and the NIST GLM reader.

The fixture is the LDC layout: LDC2002S09 ``hub5e_00/english/{sw_4390,en_4156}.sph`` +
``hub5e_00.pem``, LDC2002T43 ``reference/hub5e00.english.000405.stm`` + ``en20000405_hub5.glm``.
The real recordings are u-law with embedded Shorten, which no available encoder writes; here
sw_4390 is 16-bit PCM with embedded Shorten (lossless, compared sample by sample) and en_4156
is plain u-law SPHERE.
"""

import io

import numpy as np
import pytest
import soundfile
import soxr
from corpus_fixtures import tone, write_sphere

from espnet_omni.corpora.eval2000 import list_switchboard, scoring_text
from espnet_omni.corpora.prepare import CorpusFormatError
from espnet_omni.corpora.test_sets import prepare_test_sets
from espnet_omni.recipe.glm import read_glm
from espnet_omni.recipe.scoring import score_dir

RATE = 8000

PEM = """\
;; hub5e_00.pem: Hub5'00 English evaluation segments
;;
sw_4390 A unknown_speaker 0.50 1.50
sw_4390 A unknown_speaker 1.60 2.80
sw_4390 A unknown_speaker 3.00 3.40
sw_4390 B unknown_speaker 0.05 1.20
sw_4390 B unknown_speaker 2.00 3.00
sw_4390 B unknown_speaker 2.00 3.00
en_4156 A unknown_speaker 1.15 2.30
en_4156 B unknown_speaker 0.40 1.00
en_4156 B unknown_speaker 1.00 2.50
"""

STM = """\
;; CATEGORY "0" "" ""
;; LABEL "O" "Overall" "The Overall Category"
;; LABEL "sw" "Switchboard" "Switchboard conversations"
en_4156 A en_4156_A 1.15 2.30 <O,en,F,en-F>  HE IS A POLICE OFFICER
en_4156 B en_4156_B 0.40 1.00 <O,en,M,en-M>  (%HESITATION)
en_4156 B en_4156_B 1.00 2.50 <O,en,M,en-M>  OH REALLY
sw_4390 A sw_4390_A 0.50 1.50 <O,sw,M,sw-M>  (%HESITATION) I'M GONNA SAY { YEAH / YEP } ((WELL))
sw_4390 A sw_4390_A 1.60 2.80 <O,sw,M,sw-M>  <B_ASIDE> UH-HUH (BUT-) THAT'S RIGHT <E_ASIDE> BU-
sw_4390 A sw_4390_A 3.00 3.40 <O,sw,M,sw-M>  IGNORE_TIME_SEGMENT_IN_SCORING
sw_4390 B sw_4390_B 0.05 1.20 <O,sw,F,sw-F>  (( I DON'T KNOW )) (UH)
sw_4390 B sw_4390_B 2.00 3.00 <O,sw,F,sw-F>  %HESITATION OKAY { @ / UM }
"""

GLM = """\
;;  File: en20000405_hub5.glm
;;  Desc: excerpt in the syntax of the Hub-5 2000 GLM, for the tests
;;
* name "en20000405_hub5.glm"
* desc "The Hub-5 English GLM (test excerpt)"
* format = 'NIST1'
* max_nrules = '2500'
* copy_no_hit = 'T'
* case_sensitive = 'F'

;; Hesitation sound mappings
UH      =>  %HESITATION     / [ ] __ [ ] ;; hesitation token
UM      =>  %HESITATION     / [ ] __ [ ]
%UH     =>  %HESITATION     / [ ] __ [ ]
EH      =>  { @ / EH }      / [ ] __ [ ]

;; Alternate acceptable spellings
UH-HUH  => { UH-HUH / UHHUH / UH HUH } / [ ] __ [ ]
OKAY    => O. K. / [ ] __ [ ]
OK      => O. K. / [ ] __ [ ]
ALRIGHT => ALL RIGHT ;; context-free rule
FALKNER => FAULKNER / [WILLIAM ] __  ;; word context: not supported
[RECURSIVE] => [{RECURSIVE/RECUR {SIVE / SI VE}}] / [ ] __ [ ]

;; INPUT_DEPENDENT_APPLICATION = "ctm"
I'M     => I AM / [ ] __ [ ]
GONNA   => GOING TO / [ ] __ [ ]
[CAN'T] => [{CAN NOT / CANNOT}] / [ ] __ [ ]
[THAT'S] => [{THAT'S / THAT IS / THAT HAS}] / [ ] __ [ ]
"""

# Kaldi's ids (awk %06d truncates 1.15*100 to 114), cut at the PEM's times.
SWITCHBOARD = {
    "sw_4390-A_000050-000150": (0, 0.50, 1.50, "I'M GONNA SAY YEAH WELL"),
    "sw_4390-A_000160-000280": (0, 1.60, 2.80, "UH-HUH THAT'S RIGHT"),
    "sw_4390-B_000005-000120": (1, 0.05, 1.20, "I DON'T KNOW"),
    "sw_4390-B_000200-000300": (1, 2.00, 3.00, "OKAY"),
}
CALLHOME = {
    "en_4156-A_000114-000229": (0, 1.15, 2.30, "HE IS A POLICE OFFICER"),
    "en_4156-B_000100-000250": (1, 1.00, 2.50, "OH REALLY"),
}


def write_corpus(tmp_path, pem=PEM, stm=STM, glm=GLM):
    speech = tmp_path / "LDC2002S09" / "hub5e_00"
    english = speech / "english"
    sources = {
        "sw_4390": write_sphere(english / "sw_4390.sph", tone(4.0, RATE, 300, channels=2, seed=1), RATE, "shorten"),
        "en_4156": write_sphere(english / "en_4156.sph", tone(4.0, RATE, 250, channels=2, seed=2), RATE, "ulaw"),
    }
    (english / "hub5e_00.pem").write_text(pem)
    reference = tmp_path / "LDC2002T43" / "reference"
    reference.mkdir(parents=True)
    (reference / "hub5e00.english.000405.stm").write_text(stm)
    (reference / "en20000405_hub5.glm").write_text(glm)
    return {"EVAL2000": f"{speech} {tmp_path / 'LDC2002T43'}"}, sources


def read_table(path):
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def expected_audio(source, channel, start, end):
    """The source slice resampled as the framework does, decoded independently of it."""
    data = source.read_bytes()
    if b"shorten" in data[:1024]:
        from desphere import transcode_bytes

        data = transcode_bytes(data)
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    piece = samples[round(start * rate):round(end * rate), channel]
    return soxr.resample(piece, rate, 16000, quality="HQ")


@pytest.mark.parametrize("name, expected", [("swbd_eval2000", SWITCHBOARD), ("callhome_eval2000", CALLHOME)])
def test_prepares_both_halves_as_kaldi(tmp_path, name, expected):
    db, sources = write_corpus(tmp_path)
    [outcome] = prepare_test_sets([name], db, tmp_path / "data")
    assert outcome.status == "prepared", outcome.detail
    out = tmp_path / "data" / name
    text, utt2spk, sources_table = (read_table(out / f) for f in ("text", "utt2spk", "sources"))
    assert sorted(text) == sorted(expected)  # IGNORE_TIME_SEGMENT and all-hesitation segments dropped
    assert (out / "glm").read_text() == GLM
    for utt, (channel, start, end, words) in expected.items():
        conversation = utt.split("-")[0]
        assert text[utt] == words
        assert utt2spk[utt] == utt.split("_0")[0] == f"{conversation}-{'AB'[channel]}"
        recording, cut_channel, cut_start, cut_end = sources_table[utt].split()
        assert (recording, int(cut_channel)) == (str(sources[conversation]), channel)
        assert (float(cut_start), float(cut_end)) == (start, end)
        audio, rate = soundfile.read(out / "audio" / f"{utt}.flac", dtype="float32")
        assert rate == 16000 and audio.ndim == 1
        assert abs(len(audio) - round((end - start) * 16000)) <= 2
        reference = expected_audio(sources[conversation], channel, start, end)
        n = min(len(audio), len(reference))
        assert np.max(np.abs(audio[:n] - reference[:n])) < 2e-4  # 16-bit FLAC of the same slice
        other = expected_audio(sources[conversation], 1 - channel, start, end)
        assert np.max(np.abs(audio[:n] - other[:n])) > 0.1  # the other side is a different signal


def test_speech_root_may_be_the_ldc_folder_and_the_glm_is_listed(tmp_path):
    write_corpus(tmp_path)
    listing = list_switchboard([tmp_path / "LDC2002S09", tmp_path / "LDC2002T43"])
    assert sorted(s.utt_id for s in listing.segments if s.text) == sorted(SWITCHBOARD)
    assert listing.glm == tmp_path / "LDC2002T43" / "reference" / "en20000405_hub5.glm"


def test_transcripts_may_sit_in_the_dvd_folder(tmp_path):
    write_corpus(tmp_path)
    nested = tmp_path / "LDC2002T43" / "2000_hub5_eng_eval_tr"
    nested.mkdir()
    (tmp_path / "LDC2002T43" / "reference").rename(nested / "reference")
    listing = list_switchboard([tmp_path / "LDC2002S09" / "hub5e_00", tmp_path / "LDC2002T43"])
    assert listing.glm == nested / "reference" / "en20000405_hub5.glm"


def test_glm_scoring_honours_the_alternates(tmp_path):
    db, _ = write_corpus(tmp_path)
    prepare_test_sets(["swbd_eval2000"], db, tmp_path / "data")
    data = tmp_path / "data" / "swbd_eval2000"
    hyp = tmp_path / "hyp_text"
    hyp.write_text(
        "sw_4390-A_000050-000150 um i am going to say yeah well\n"
        "sw_4390-A_000160-000280 uhhuh that is right\n"
        "sw_4390-B_000005-000120 i don't know\n"
        "sw_4390-B_000200-000300 ok\n"
    )
    with_glm, _ = score_dir(data / "text", hyp, data / "utt2spk", tmp_path / "glm", "python", glm=data / "glm")
    without, _ = score_dir(data / "text", hyp, data / "utt2spk", tmp_path / "plain", "python")
    assert sum(e.errors for e in with_glm) == 0
    assert sum(e.errors for e in without) >= 2  # uhhuh/uh-huh and ok/okay differ without the GLM


def test_stm_scoring_conventions():
    assert scoring_text("(%HESITATION) I'M { YEAH / YEP } ((WELL)) (BUT-) BU- -TION %UM") == "I'M YEAH WELL"
    assert scoring_text("<B_ASIDE> (( I DON'T )) KNOW <E_ASIDE> { @ / UM } UH-HUH") == "I DON'T KNOW UH-HUH"
    assert scoring_text("(I MEAN) SO BU(T)- YES") == "SO YES"
    assert scoring_text("IGNORE_TIME_SEGMENT_IN_SCORING") == ""


def test_missing_corpus_is_skipped_naming_the_expected_folder(tmp_path):
    db = {"EVAL2000": f"{tmp_path / 'hub5e_00'} {tmp_path / 'LDC2002T43'}"}
    [outcome] = prepare_test_sets(["swbd_eval2000"], db, tmp_path / "data")
    assert outcome.status == "skipped"
    assert str(tmp_path / "hub5e_00" / "english") in outcome.detail and "LDC2002S09" in outcome.detail


def test_missing_transcripts_or_recording_is_skipped_naming_it(tmp_path):
    db, sources = write_corpus(tmp_path)
    sources["en_4156"].unlink()
    outcomes = prepare_test_sets(["swbd_eval2000", "callhome_eval2000"], db, tmp_path / "data")
    assert [o.status for o in outcomes] == ["prepared", "skipped"]
    assert str(sources["en_4156"]) in outcomes[1].detail
    (tmp_path / "LDC2002T43" / "reference" / "hub5e00.english.000405.stm").unlink()
    [outcome] = prepare_test_sets(["swbd_eval2000"], db, tmp_path / "data2")
    assert outcome.status == "skipped" and "hub5e00.english.000405.stm" in outcome.detail


@pytest.mark.parametrize("pem, stm, glm, where", [
    (PEM.replace("sw_4390 B unknown_speaker 0.05", "sw_4390 C unknown_speaker 0.05"), STM, GLM, "hub5e_00.pem:6"),
    (PEM.replace("0.50 1.50", "0.50 1.51"), STM, GLM, "hub5e_00.pem:3"),  # no STM line for it
    (PEM, STM + "sw_4390 B sw_4390_B 3.50 3.90 <O,sw,F,sw-F> EXTRA\n", GLM, "hub5e00.english.000405.stm:12"),
    (PEM, STM.replace("1.00 2.50 <O", "1.00 x <O"), GLM, "hub5e00.english.000405.stm:6"),
    (PEM, STM, GLM + "GOTTA GOT TO\n", f"en20000405_hub5.glm:{len(GLM.splitlines()) + 1}"),
])
def test_malformed_corpus_file_is_skipped_with_file_and_line(tmp_path, pem, stm, glm, where):
    db, _ = write_corpus(tmp_path, pem, stm, glm)
    [outcome] = prepare_test_sets(["swbd_eval2000"], db, tmp_path / "data")
    assert outcome.status == "skipped"
    assert where in outcome.detail, outcome.detail
    assert not (tmp_path / "data" / "swbd_eval2000").exists()


def test_glm_maps_every_alternative_to_one_canonical_form(tmp_path):
    path = tmp_path / "en20000405_hub5.glm"
    path.write_text(GLM)
    glm = read_glm(path)
    assert glm.header["name"] == "en20000405_hub5.glm" and not glm.case_sensitive and glm.copy_no_hit
    assert glm.skipped == [GLM.splitlines().index(next(x for x in GLM.splitlines() if x.startswith("FALKNER"))) + 1]
    assert glm.apply("uh I'm gonna say uh-huh") == "I AM GOING TO say UH-HUH"  # hesitations dropped
    for variant in ("uh-huh", "UHHUH", "uh huh"):  # "uh huh": the longest match wins over "uh"
        assert glm.apply(variant) == "UH-HUH"
    assert glm.apply("ok okay o. k.") == "O. K. O. K. O. K."
    assert glm.apply("can't") == glm.apply("cannot") == glm.apply("Can Not") == "CAN NOT"
    assert glm.apply("that is it") == glm.apply("that's it") == "THAT'S it"
    assert glm.apply("recur si ve recursive") == "RECURSIVE RECURSIVE"
    assert glm.apply("alright eh um") == "ALL RIGHT"
    assert glm.apply("william falkner") == "william falkner"  # its context rule is skipped
    for text in ("uh huh I'm okay", "that has cannot", "gonna ok"):
        assert glm.apply(glm.apply(text)) == glm.apply(text)


@pytest.mark.parametrize("rule, message", [
    ("GOTTA GOT TO", "expected a rule"),
    ("UH-HUH => { UH-HUH / UHHUH / [ ] __ [ ]", "expected '}'"),
    ("GONNA => GOING TO / [ ] [ ]", "expected a context"),
    (" => GOING TO", "expected words before '=>'"),
])
def test_glm_errors_name_file_and_line(tmp_path, rule, message):
    path = tmp_path / "bad.glm"
    path.write_text(f"* name \"bad.glm\"\n;; comment\nUH => %HESITATION / [ ] __ [ ]\n{rule}\n")
    with pytest.raises(CorpusFormatError, match=rf"bad.glm:4: .*{message}"):
        read_glm(path)
