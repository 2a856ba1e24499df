"""egs2/omni_asr/asr1 end to end: the smoke run, a resume from a middle stage, and a broken
data dir stopping stage 2 with the file and line."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from corpus_fixtures import write_librispeech

RECIPE = REPO / "egs2" / "omni_asr" / "asr1"
MODELS = ["dense_transformer", "switch", "omni_router"]


def run_recipe(root: Path, *args: str, check: bool = True, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **env_vars)
    proc = subprocess.run(
        ["./run.sh", "--smoke", "true", "--python", sys.executable, *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=1200,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"run.sh {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A copy of the recipe beside the package's conf/, after a full smoke run."""
    top = tmp_path_factory.mktemp("checkout")
    root = top / "egs2" / "omni_asr" / "asr1"
    shutil.copytree(RECIPE, root, ignore=shutil.ignore_patterns("data", "dump", "exp", "smoke", "downloads"))
    (top / "conf").symlink_to(REPO / "conf")
    proc = run_recipe(root)
    return root, proc


@pytest.mark.timeout(1200)
def test_smoke_run_goes_through_every_stage(smoke):
    root, proc = smoke
    for stage in range(1, 13):
        assert f"Stage {stage}:" in proc.stdout, stage
    exp = root / "smoke" / "exp"
    results = (exp / "RESULTS.md").read_text()
    header = next(line for line in results.splitlines() if line.startswith("| model"))
    assert header.startswith("| model | test_clean (in-domain) | test_accent |")
    rows = [line.split(" | ")[0] for line in results.splitlines() if line.startswith("| ")]
    assert rows[:6] == ["| model", "| ---", "| utterances", *(f"| {m}" for m in MODELS)]
    for model in MODELS:
        packed = exp / f"asr_{model}" / f"asr_{model}.zip"
        with zipfile.ZipFile(packed) as archive:  # the LM travels with each model
            meta = yaml.safe_load(archive.read("meta.yaml"))
        assert set(meta["files"]) == {"asr_model_file", "lm_file"}
        assert (exp / f"asr_{model}" / "images" / "loss_ctc.png").exists()
    assert "decoding: decode_ctc_lm_lm_rnn_valid.cer_ctc.best" in results
    assert "95% CI" in results and "| switch |" in results and "| dense_transformer |" in results
    for test_set in ("test_noise", "test_babble", "test_reverb"):
        assert f"| {test_set} |" in header
    # Stage 10: the MoE models' routing on the validation and test sets, in RESULTS.md and
    # packed with every model.
    routing = json.loads((exp / "routing" / "routing.json").read_text())
    assert set(routing["models"]) == {"switch", "omni_router"}
    assert set(routing["skipped"]) == {"dense_transformer"}
    omni = routing["models"]["omni_router"]
    assert list(omni["sets"]) == ["dev", "test_clean", "test_accent", "test_variant", "test_rate",
                                  "test_noise", "test_babble", "test_reverb"]
    assert omni["reference"]["name"] == "train" and omni["reference"]["frames"] > 0
    assert omni["noise"][0]["clean"] == "dev" and omni["noise"][0]["length_mismatches"] == 0
    assert "## Routing" in results and "(routing/routing_agreement.png)" in results
    with zipfile.ZipFile(exp / "asr_omni_router" / "asr_omni_router.zip") as archive:
        assert "smoke/exp/routing/routing_agreement.png" in archive.namelist()


@pytest.mark.timeout(1200)
def test_rerun_keeps_finished_work_and_resumes_from_a_middle_stage(smoke):
    root, _ = smoke
    exp = root / "smoke" / "exp"
    model = exp / "asr_omni_router" / "valid.cer_ctc.best.pth"
    lm = exp / "lm_rnn" / "valid.loss.best.pth"
    before, lm_before = digest(model), digest(lm)
    hyps = exp / "asr_omni_router" / "decode_ctc_lm_lm_rnn_valid.cer_ctc.best" / "test_clean" / "text"
    hyps_before = hyps.read_text()
    results_before = (exp / "RESULTS.md").read_text()
    (exp / "RESULTS.md").unlink()
    run_recipe(root, "--stage", "6", "--stop_stage", "9")
    # Training found its finished checkpoints: nothing retrained.
    assert digest(model) == before and digest(lm) == lm_before
    assert hyps.read_text() == hyps_before
    # Stage 9 rewrites the WER tables; the Routing section is stage 10's.
    results_after = (exp / "RESULTS.md").read_text()
    assert results_after.split("\n", 3)[3] == results_before.split("\n## Routing")[0].split("\n", 3)[3]


@pytest.mark.timeout(900)
def test_a_packed_model_transcribes_in_another_folder_as_the_recipe_decoded(smoke, tmp_path):
    """The zip of stage 11 (BPE model, feature statistics and LM inside) decodes on its own,
    away from the recipe: transcribe's beam search with the packed LM gives the recipe's
    hypotheses."""
    root, _ = smoke
    exp = root / "smoke" / "exp"
    data = root / "smoke" / "data" / "test_clean"
    wav_scp = tmp_path / "wav.scp"  # absolute paths: the recipe's are relative to it
    wav_scp.write_text("".join(f"{utt} {(root / path).resolve()}\n" for utt, path in
                               (line.split() for line in (data / "wav.scp").read_text().splitlines())))
    model_zip = shutil.copy(exp / "asr_omni_router" / "asr_omni_router.zip", tmp_path / "asr_omni_router.zip")
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "espnet_omni.bin.transcribe", "--model", str(model_zip),
                           str(wav_scp), "--output", "hyp.txt", "--cache_dir", "cache"], cwd=work,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recipe = (exp / "asr_omni_router" / "decode_ctc_lm_lm_rnn_valid.cer_ctc.best" / "test_clean" / "text")

    def by_utt(text):
        return {utt: hyp.strip() for utt, hyp in ((line.split(" ", 1) + [""])[:2] for line in text.splitlines())}

    assert by_utt((work / "hyp.txt").read_text()) == by_utt(recipe.read_text())


@pytest.mark.timeout(600)
def test_broken_data_dir_fails_stage_2_naming_file_and_line(smoke):
    root, _ = smoke
    text = root / "smoke" / "data" / "test_noise" / "text"
    original = text.read_text()
    lines = original.splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    text.write_text("\n".join(lines) + "\n")
    try:
        proc = run_recipe(root, "--stage", "2", "--stop_stage", "2", check=False)
    finally:
        text.write_text(original)
    assert proc.returncode != 0
    assert f"{text.relative_to(root)}:3:" in proc.stderr and "must be sorted" in proc.stderr


def test_unknown_option_is_rejected(smoke):
    root, _ = smoke
    proc = run_recipe(root, "--stgae", "3", check=False)
    assert proc.returncode != 0 and "unknown option --stgae" in proc.stderr


@pytest.mark.timeout(1200)
def test_inference_args_decode_into_their_own_directory(smoke):
    """As in ESPnet's asr.sh: --inference_args names the decoding directory, so an int8 decode
    (ESPnet's --quantize_asr_model) sits beside the float32 one instead of replacing it."""
    root, _ = smoke
    model_dir = root / "smoke" / "exp" / "asr_omni_router"
    float_hyps = model_dir / "decode_ctc_lm_lm_rnn_valid.cer_ctc.best" / "test_clean" / "text"
    before = float_hyps.read_text()
    run_recipe(root, "--stage", "7", "--stop_stage", "9", "--models", "omni_router",
               "--inference_args", "--quantize_asr_model true")
    int8_dir = model_dir / "decode_ctc_lm_quantize_asr_modeltrue_lm_rnn_valid.cer_ctc.best"
    int8_hyps = (int8_dir / "test_clean" / "text").read_text()
    assert float_hyps.read_text() == before
    assert [line.split()[0] for line in int8_hyps.splitlines()] == [
        line.split()[0] for line in before.splitlines()]
    assert "Use quantized asr model" in (int8_dir / "logdir" / "asr_inference.1.log").read_text()


@pytest.mark.timeout(1200)
def test_packed_models_are_evaluated_on_benchmark_sets_without_training(smoke, tmp_path):
    """--skip_train with --download_model: stage 1 prepares the benchmark sets whose corpus is
    on disk and names the missing ones, the packed models (with their LM) decode and score
    them apart from the trained models, and RESULTS.md has the paper's columns."""
    root, _ = smoke
    exp = root / "smoke" / "exp"
    trained = digest(exp / "asr_omni_router" / "valid.cer_ctc.best.pth")
    written = write_librispeech(tmp_path / "corpora")
    zips = " ".join(str(exp / f"asr_{m}" / f"asr_{m}.zip") for m in MODELS)
    proc = run_recipe(root, "--skip_train", "true", "--download_model", zips,
                      "--test_sets", "tedlium3_test librispeech_test_clean",
                      LIBRISPEECH=str(tmp_path / "corpora"), TEDLIUM3="")
    assert "librispeech_test_clean: prepared" in proc.stdout
    assert "tedlium3_test: skipped (TEDLIUM3: TEDLIUM3 is empty in db.sh)" in proc.stdout
    assert "Left out: tedlium3_test" in proc.stdout and "Stage 6:" not in proc.stdout
    download = exp / "download"
    for model in MODELS:
        decode = download / f"asr_{model}" / "decode_ctc_lm_lm_rnn_packed"
        hyps = (decode / "librispeech_test_clean" / "text").read_text().splitlines()
        assert [line.split()[0] for line in hyps] == sorted(written)
        assert (download / f"asr_{model}" / "lm" / "model.pth").exists()  # the LM packed with it
    results = (download / "RESULTS.md").read_text()
    assert "| model | AMI-IHM | CHiME-6 |" in results
    assert "| utterances | - | - | - | - | - | - | 4 | - | - | - | - |" in results
    assert "Not evaluated: AMI-IHM" in results and "TED-LIUM 3, VoxPopuli." in results
    assert "| LibriSpeech test-clean (in-domain) |" in results
    routing = json.loads((download / "routing" / "routing.json").read_text())
    assert list(routing["models"]["omni_router"]["sets"]) == ["librispeech_test_clean"]
    assert "## Routing" in results
    assert digest(exp / "asr_omni_router" / "valid.cer_ctc.best.pth") == trained

    # A trained experiment folder, evaluated in place: the prepared set is reused as it is,
    # the training run's RESULTS.md is kept and the evaluation's goes to exp/eval/.
    training_results = (exp / "RESULTS.md").read_text()
    proc = run_recipe(root, "--skip_train", "true", "--models", "omni_router",
                      "--test_sets", "librispeech_test_clean", LIBRISPEECH=str(tmp_path / "corpora"))
    assert "librispeech_test_clean: up to date" in proc.stdout
    hyps = exp / "asr_omni_router" / "decode_ctc_lm_lm_rnn_valid.cer_ctc.best" / "librispeech_test_clean" / "text"
    assert [line.split()[0] for line in hyps.read_text().splitlines()] == sorted(written)
    assert digest(exp / "asr_omni_router" / "valid.cer_ctc.best.pth") == trained
    assert (exp / "RESULTS.md").read_text() == training_results
    assert "| omni_router | - | - |" in (exp / "eval" / "RESULTS.md").read_text()


@pytest.mark.timeout(3000)
def test_study_over_two_seeds_reuses_the_prepared_run_and_reports(smoke):
    """run_study.sh: seed 0 is the smoke run's own models, seed 1 trains anew with --seed 1 on
    the shared statistics and LM; the report compares them."""
    root, _ = smoke
    exp = root / "smoke" / "exp"
    trained = digest(exp / "asr_omni_router" / "valid.cer_ctc.best.pth")
    proc = subprocess.run(["./run_study.sh", "--smoke", "true", "--python", sys.executable, "--seeds", "0 1"],
                          cwd=root, capture_output=True, text=True, timeout=2400,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = root / "smoke" / "study"
    assert (study / "seed0" / "asr_omni_router").resolve() == (exp / "asr_omni_router").resolve()
    assert digest(exp / "asr_omni_router" / "valid.cer_ctc.best.pth") == trained  # not retrained
    seed1 = study / "seed1" / "asr_omni_router"
    assert yaml.safe_load((seed1 / "config.yaml").read_text())["seed"] == 1
    assert digest(seed1 / "valid.cer_ctc.best.pth") != trained
    assert (study / "seed1" / "lm_rnn").resolve() == (exp / "lm_rnn").resolve()  # one LM for all
    assert (study / "seed1" / "routing" / "routing.json").exists()
    report = (study / "REPORT.md").read_text()
    assert report.startswith("# The comparison over 2 training seeds (0, 1)")
    assert "## WER (%), decode_ctc_lm_lm_rnn_valid.cer_ctc.best (the recipe's decoding)" in report
    assert "## WER (%), decode_greedy_ctc_valid.cer_ctc.best" in report
    assert "| more consistent routing across layers than switch (NMI of layer pairs) |" in report
    assert (study / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    # Seed 0's recipe decoding is the smoke run's, made from the same model: kept, not redone.
    assert "smoke/study/seed0/asr_omni_router/decode_ctc_lm_lm_rnn_valid.cer_ctc.best is decoded from the same " \
        "model and settings; kept" in proc.stdout

    # What the report read of each seed, kept for when the seed folders are gone.
    assert sorted(p.name for p in (study / "summaries").iterdir()) == ["seed0.json.gz", "seed1.json.gz"]

    # An ablation of both MoE models with router jitter and training noise, trained one model per
    # run (--ablation_models): first the Omni-router alone, seed 1 against the baseline's seed 1,
    # here a baseline kept as summaries only; Switch and the dense twin are the baseline's.
    kept = root / "kept_baseline"
    shutil.copytree(study / "summaries", kept / "summaries")
    (root / "conf" / "ablation" / "noisy_jitter.yaml").write_text(
        "models: [switch, omni_router]\nconfig:\n  encoder_conf:\n    router_jitter: 0.01\n"
        "  noise_scp: data/noise/wav.scp\n  noise_apply_prob: 0.5\n  noise_db_range: \"0_10\"\n")

    def run_ablation(model):
        proc = subprocess.run(["./run_study.sh", "--smoke", "true", "--python", sys.executable, "--seeds", "1",
                               "--ablation", "conf/ablation/noisy_jitter.yaml", "--ablation_models", model,
                               "--baseline_dir", str(kept)],
                              cwd=root, capture_output=True, text=True, timeout=2400,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    run_ablation("omni_router")
    ablation = study / "noisy_jitter" / "seed1"
    assert sorted(p.name for p in ablation.glob("asr_*") if not p.name.startswith("asr_stats")) == ["asr_omni_router"]
    config = yaml.safe_load((ablation / "asr_omni_router" / "config.yaml").read_text())
    assert config["seed"] == 1 and config["encoder_conf"]["router_jitter"] == 0.01
    assert config["noise_scp"] == "data/noise/wav.scp" and config["max_epoch"] == 2
    assert len((root / "data" / "noise" / "wav.scp").read_text().splitlines()) == 12
    assert digest(ablation / "asr_omni_router" / "valid.cer_ctc.best.pth") != digest(seed1 / "valid.cer_ctc.best.pth")
    report = (study / "noisy_jitter" / "REPORT.md").read_text()
    assert report.startswith("# The ablation noisy_jitter over 1 training seed (1)")
    against = report.split("## Against the baseline")[1].split("\n## ")[0]
    assert "| omni_router | " in against and "| switch |" not in against
    assert "dense_transformer, switch: the baseline's own runs." in against

    # Then Switch, by a second run into the same seed folder: the Omni-router is kept as trained,
    # and the seed's results and routing analysis cover both models.
    omni = digest(ablation / "asr_omni_router" / "valid.cer_ctc.best.pth")
    run_ablation("switch")
    assert digest(ablation / "asr_omni_router" / "valid.cer_ctc.best.pth") == omni
    assert yaml.safe_load((ablation / "asr_switch" / "config.yaml").read_text())["encoder_conf"]["router_jitter"] == 0.01
    assert list(json.loads((ablation / "routing" / "routing.json").read_text())["models"]) == ["switch", "omni_router"]
    results = (ablation / "RESULTS.md").read_text()
    assert "\n| switch | " in results and "\n| omni_router | " in results
    against = (study / "noisy_jitter" / "REPORT.md").read_text().split("## Against the baseline")[1].split("\n## ")[0]
    assert "| omni_router | " in against and "| switch | " in against
    assert "dense_transformer: the baseline's own runs." in against
