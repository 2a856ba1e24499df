"""Data-dir validation, scoring (sclite and the Python scorer), results with bootstrap CIs,
the model folder prepared for publishing."""

import random
import zipfile

import numpy as np
import pytest
import soundfile

from espnet_omni.recipe import data_dir, results, scoring
from espnet_omni.recipe.publish import (
    UploadError,
    prepare_model_folder,
    upload_model_folder,
    validate_card,
    wer_results,
)
from espnet_omni.recipe.scoring import UttErrors


@pytest.fixture()
def good_dir(tmp_path):
    d = tmp_path / "set"
    d.mkdir()
    rows = []
    for i, words in enumerate(["hello world", "set an alarm", "three four"]):
        path = tmp_path / f"u{i}.wav"
        soundfile.write(path, np.zeros(1600 * (i + 1), dtype=np.int16), 16000)
        rows.append((f"spk-u{i}", str(path), words))
    (d / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p, _ in rows))
    (d / "text").write_text("".join(f"{u} {w}\n" for u, _, w in rows))
    (d / "utt2spk").write_text("".join(f"{u} spk\n" for u, _, _ in rows))
    (d / "spk2utt").write_text("spk " + " ".join(u for u, _, _ in rows) + "\n")
    return d


def test_valid_dir_gives_durations(good_dir):
    durations = data_dir.validate(good_dir)
    assert durations == {"spk-u0": 0.1, "spk-u1": 0.2, "spk-u2": 0.3}


@pytest.mark.parametrize(
    "file, edit, message",
    [
        ("text", lambda s: s.replace("spk-u1 set an alarm", "spk-u1"), r"text:2: 'spk-u1' has no value"),
        ("wav.scp", lambda s: "\n".join(reversed(s.splitlines())) + "\n", r"wav.scp:2: 'spk-u1' comes after 'spk-u2'"),
        ("utt2spk", lambda s: s.replace("spk-u2 spk", "spk-u9 spk"), r"utt2spk:3: 'spk-u9' is not in wav.scp"),
        ("text", lambda s: s + "spk-u2 again\n", r"text:4: duplicate id 'spk-u2'"),
        ("wav.scp", lambda s: s.replace("u1.wav", "missing.wav"), r"wav.scp:2: audio '.*missing.wav' does not exist"),
        ("spk2utt", lambda s: "spk spk-u0\n", r"spk2utt:1: speaker 'spk' disagrees with utt2spk"),
    ],
)
def test_broken_dir_names_file_and_line(good_dir, file, edit, message):
    path = good_dir / file
    path.write_text(edit(path.read_text()))
    with pytest.raises(data_dir.DataDirError, match=message):
        data_dir.validate(good_dir)


def test_filter_keeps_range_and_never_leaves_a_partial_copy(good_dir, tmp_path):
    dst = tmp_path / "filtered"
    assert data_dir.filter_by_duration(good_dir, dst, 0.15, 1.0) == (2, 1)
    assert (dst / "wav.scp").read_text().split()[::2] == ["spk-u1", "spk-u2"]
    assert data_dir.validate(dst)
    # A failing re-run leaves the earlier result in place.
    (good_dir / "text").write_text("")
    with pytest.raises(data_dir.DataDirError):
        data_dir.filter_by_duration(good_dir, dst, 0.15, 1.0)
    assert (dst / "wav.scp").read_text().split()[::2] == ["spk-u1", "spk-u2"]


def random_pairs(n, seed):
    rng = random.Random(seed)
    words = "a b c d e f".split()
    refs, hyps = {}, {}
    for k in range(n):
        ref = [rng.choice(words) for _ in range(rng.randint(0, 12))]
        hyp = [rng.choice(words) for _ in range(rng.randint(0, 12))]
        if rng.random() < 0.6:  # mostly near-misses
            hyp = list(ref)
            for _ in range(rng.randint(0, 5)):
                op = rng.randrange(3)
                if op == 0 and hyp:
                    hyp[rng.randrange(len(hyp))] = rng.choice(words)
                elif op == 1 and hyp:
                    del hyp[rng.randrange(len(hyp))]
                else:
                    hyp.insert(rng.randrange(len(hyp) + 1), rng.choice(words))
        refs[f"u{k:04d}"], hyps[f"u{k:04d}"] = " ".join(ref), " ".join(hyp)
    return refs, hyps


def test_python_scorer_matches_sclite_counts(tmp_path):
    sclite = scoring.find_sclite()
    if sclite is None:
        pytest.fail("sclite is not installed: install Debian's sctk (CI does) to run this comparison")
    refs, hyps = random_pairs(2000, seed=1)
    spk = {u: "s" for u in refs}
    scoring.write_trn(tmp_path / "ref.trn", refs, spk)
    scoring.write_trn(tmp_path / "hyp.trn", hyps, spk)
    ours = scoring.score_python(tmp_path / "ref.trn", tmp_path / "hyp.trn")
    theirs = scoring.score_sclite(tmp_path / "ref.trn", tmp_path / "hyp.trn", sclite)
    assert ours == theirs


def test_align_counts_examples():
    assert scoring.align_counts("a b c".split(), "a b c".split()) == (0, 0, 0)
    assert scoring.align_counts("a b c".split(), "a x c".split()) == (1, 0, 0)
    assert scoring.align_counts("a b c".split(), "a c".split()) == (0, 1, 0)
    assert scoring.align_counts([], "a b".split()) == (0, 0, 2)
    # sclite's weights: one deletion + one insertion (6) beat two substitutions (8)
    assert scoring.align_counts("f b a f".split(), "f f f g".split()) == (1, 1, 1)


def test_score_dir_normalises_both_sides(tmp_path):
    (tmp_path / "ref").write_text("u1 Set an alarm for twenty one, please.\nu2 the colour is grey today\n")
    (tmp_path / "hyp").write_text("u1 set an alarm for 21 please\nu2 The color is gray\n")
    (tmp_path / "utt2spk").write_text("u1 s\nu2 s\n")
    errors, _ = scoring.score_dir(tmp_path / "ref", tmp_path / "hyp", tmp_path / "utt2spk", tmp_path / "out", "python")
    assert [(e.utt_id, e.errors) for e in errors] == [("s-u1", 0), ("s-u2", 1)]
    assert "WER: " in (tmp_path / "out" / "result.txt").read_text()


def test_missing_hypothesis_is_an_error(tmp_path):
    (tmp_path / "ref").write_text("u1 a\nu2 b\n")
    (tmp_path / "hyp").write_text("u1 a\n")
    (tmp_path / "utt2spk").write_text("u1 s\nu2 s\n")
    with pytest.raises(ValueError, match="no hypothesis for 1 utterance"):
        scoring.score_dir(tmp_path / "ref", tmp_path / "hyp", tmp_path / "utt2spk", tmp_path / "out")


def make_errors(rate, n=400, seed=0):
    rng = np.random.default_rng(seed)
    return [UttErrors(f"u{i:04d}", 10, int(rng.binomial(10, rate)), 0, 0) for i in range(n)]


def test_bootstrap_interval_covers_a_real_gap_and_straddles_zero_without_one():
    errors = {
        "omni": {"a": make_errors(0.10, seed=1), "b": make_errors(0.20, seed=2)},
        "dense": {"a": make_errors(0.15, seed=3), "b": make_errors(0.30, seed=4)},
        "twin": {"a": make_errors(0.10, seed=5), "b": make_errors(0.20, seed=6)},
    }
    gap = results.paired_bootstrap(errors, "omni", "dense", ["a", "b"], resamples=500)
    assert 25 < gap.reduction < 42 and gap.low > 0 and gap.high > gap.reduction > gap.low
    none = results.paired_bootstrap(errors, "omni", "twin", ["a", "b"], resamples=500)
    assert none.low < 0 < none.high
    table = results.results_markdown(errors, ["dense", "twin", "omni"], ["a", "b"], ["a"], "omni", 200)
    assert "| model | a (in-domain) | b | out-of-domain average (1 set) | average (2 sets) |" in table
    assert "| utterances | 400 | 400 |  |  |" in table
    for m in ("dense", "twin", "omni"):
        a, b = scoring.wer(errors[m]["a"]), scoring.wer(errors[m]["b"])
        assert f"| {m} | {a:.1f} | {b:.1f} | **{b:.2f}** | **{(a + b) / 2:.2f}** |" in table
    assert "| dense | +" in table and "| twin |" in table and "Not evaluated" not in table


def test_benchmark_table_has_the_papers_columns_and_says_what_it_covers():
    sets = ["swbd_eval2000", "librispeech_test_clean", "tedlium3_test"]
    errors = {m: {s: make_errors(rate * (i + 1), n=20 + i, seed=i) for i, s in enumerate(sets)}
              for m, rate in (("dense_transformer", 0.1), ("switch", 0.09), ("omni_router", 0.08))}
    table = results.results_markdown(errors, list(errors), sets, ["librispeech_test_clean"], "omni_router", 100)
    header = table.splitlines()[0]
    assert header == (
        "| model | AMI-IHM | CHiME-6 | CommonVoice | FLEURS | CallHome | Switchboard | LibriSpeech test-clean "
        "(in-domain) | LibriSpeech test-other | WSJ nov92 | TED-LIUM 3 | VoxPopuli | out-of-domain average "
        "(2 sets) | average (3 sets) |")
    assert "| utterances | - | - | - | - | - | 20 | 21 | - | - | 22 | - |  |  |" in table
    swbd, ted = (scoring.wer(errors["switch"][s]) for s in ("swbd_eval2000", "tedlium3_test"))
    assert f"| switch | - | - | - | - | - | {swbd:.1f} |" in table and f"**{(swbd + ted) / 2:.2f}**" in table
    assert "Not evaluated: AMI-IHM, CHiME-6, CommonVoice, FLEURS, CallHome, LibriSpeech test-other" in table
    assert "over the 2 out-of-domain sets" in table and "| dense_transformer | +" in table


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_publish_folder_has_a_card_and_a_bad_zip_keeps_the_earlier_folder(tmp_path):
    meta = "files:\n  asr_model_file: exp/model.pth\nyaml_files:\n  asr_train_config: exp/config.yaml\n"
    config = "encoder: switch\nencoder_conf:\n  num_experts: 4\n"
    model_zip = _zip(tmp_path / "model.zip", {"meta.yaml": meta, "exp/config.yaml": config, "exp/model.pth": "w"})
    folder = prepare_model_folder(model_zip, "someone/tiny", None)
    assert folder == tmp_path / "hf_model"
    card = (folder / "README.md").read_text()
    assert "`switch` encoder" in card and "num_experts: 4" in card and "Not reported." in card
    assert 'from_pretrained("someone/tiny", ctc_weight=1.0, beam_size=1' in card  # no LM packed
    assert (folder / "exp" / "model.pth").read_text() == "w"

    _zip(model_zip, {"meta.yaml": "files: {}\n"})
    with pytest.raises(ValueError, match="model.zip: no meta.yaml naming an asr_train_config"):
        prepare_model_folder(model_zip, "someone/tiny", None)
    assert "`switch` encoder" in (folder / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_model", "model.zip"]  # no staging left
    with pytest.raises(ValueError, match="<user or org>/<name>, got 'tiny'"):
        prepare_model_folder(model_zip, "tiny", None)


RESULTS_MD = """# Results

| model | LibriSpeech test-clean (in-domain) | TED-LIUM 3 | VoxPopuli | out-of-domain average (2 sets) |
| --- | --- | --- | --- | --- |
| utterances | 20 | 21 | - |  |
| dense_transformer | 5.0 | 9.0 | - | **9.00** |
| omni_router | 4.5 | 8.2 | - | **8.20** |
"""


def _packed_with_routing(tmp_path):
    meta = ("files:\n  asr_model_file: exp/asr_omni_router/model.pth\nyaml_files:\n"
            "  asr_train_config: exp/asr_omni_router/config.yaml\n")
    config = ("encoder: omni_router\nencoder_conf:\n  num_experts: 8\nmax_epoch: 30\n"
              "train_data_path_and_name_and_type:\n- [dump/raw/train_960/wav.scp, speech, sound]\n")
    return _zip(tmp_path / "asr_omni_router.zip", {
        "meta.yaml": meta, "exp/asr_omni_router/config.yaml": config,
        "exp/asr_omni_router/model.pth": "w", "exp/routing/routing_agreement.png": "png",
        "exp/routing/routing_path_omni_router.png": "png"})


def test_model_card_has_results_routing_citation_and_validates(tmp_path):
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text(RESULTS_MD)
    assert wer_results(RESULTS_MD, "omni_router") == [
        ("librispeech_test_clean", "LibriSpeech test-clean", 4.5), ("tedlium3_test", "TED-LIUM 3", 8.2)]
    folder = prepare_model_folder(_packed_with_routing(tmp_path), "someone/omni", results_md,
                                  license="mit", datasets=["openslr/librispeech_asr"])
    card = (folder / "README.md").read_text()
    import huggingface_hub

    data = huggingface_hub.ModelCard(card).data
    assert data.license == "mit" and data.pipeline_tag == "automatic-speech-recognition"
    assert data.datasets == ["openslr/librispeech_asr"] and "omni_router" in data.tags
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in data.eval_results] == [
        ("librispeech_test_clean", "wer", 4.5), ("tedlium3_test", "wer", 8.2)]
    assert "sharing ONE router" in card and "`train_960` of the espnet-omni recipe" in card
    assert "30 epochs" in card and "| omni_router | 4.5 | 8.2 |" in card
    assert "![routing_agreement](exp/routing/routing_agreement.png)" in card
    assert "@inproceedings{gu2025omnirouter" in card and "## License\n\n`mit`" in card
    assert "python -m espnet_omni.bin.transcribe --model someone/omni" in card

    # What the Hub would refuse, found offline.
    (folder / "exp" / "routing" / "routing_agreement.png").unlink()
    (folder / "README.md").write_text(card.replace("license: mit", "license: my-own"))
    with pytest.raises(ValueError) as info:
        validate_card(folder)
    assert "license 'my-own' is not one the Hub knows" in str(info.value)
    assert "the picture exp/routing/routing_agreement.png is not in the folder" in str(info.value)
    with pytest.raises(ValueError, match="--license 'my-own' is not a license identifier"):
        prepare_model_folder(tmp_path / "asr_omni_router.zip", "someone/omni", license="my-own")


def test_upload_without_token_or_network_stops_with_the_folder_ready(tmp_path, monkeypatch):
    folder = prepare_model_folder(_packed_with_routing(tmp_path), "someone/omni")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no stored login
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(UploadError, match=rf"no Hugging Face token: .* {folder} is ready"):
        upload_model_folder(folder, "someone/omni")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(UploadError, match="failed .* the folder is ready"):
        upload_model_folder(folder, "someone/omni")
    assert (folder / "README.md").exists()
