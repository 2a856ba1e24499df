"""What the recipe does with input it cannot use and with work it did not finish: a vocabulary
larger than the text gives, a config with unknown or mistyped keys, decoding jobs that failed
or were killed, and scores or results interrupted while being written."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from espnet_omni.recipe.ablation import AblationError, read_ablation, write_ablation_configs
from espnet_omni.recipe.scoring import score_dir
from espnet_omni.recipe.token_list import TokenListError, make_token_list
from espnet_omni.recipe.training_config import TrainingConfigError, check_config_file
from espnet_omni.whole_file import open_whole, write_text_whole

from conftest import CONF, REPO
from test_recipe_end_to_end import RECIPE, run_recipe

RECIPE_CONF = RECIPE / "conf"
# One model, greedy CTC, two test sets: the smallest run that goes through stages 1-7.
RUN = ["--models", "omni_router", "--use_lm", "false", "--inference_tool", "greedy_ctc",
       "--test_sets", "test_clean test_noise", "--inference_nj", "3"]
DECODE = "decode_greedy_ctc_valid.cer_ctc.best"
TEXT = ("utt1 THE CAT SAT ON THE MAT\nutt2 A DOG RAN IN THE PARK\nutt3 HELLO WORLD\n"
        "utt4 THE DOG AND THE CAT SAT IN THE PARK\nutt5 A WORLD OF CATS AND DOGS\n")


# --- vocabulary too large ---------------------------------------------------------------------

def _snapshot(folder: Path):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_too_large_vocabulary_names_the_text_and_the_nbpe_it_supports(tmp_path):
    text = tmp_path / "text"
    text.write_text(TEXT)
    with pytest.raises(TokenListError) as err:
        make_token_list(text, tmp_path / "tokens", nbpe=150)
    message = str(err.value)
    assert message.startswith(f"{text}: ") and "150 unigram units" in message
    largest = int(message.split("give --nbpe ")[1].split()[0])
    assert f"at most {largest}" in message
    # The size named is the largest the text supports.
    assert make_token_list(text, tmp_path / "tokens", nbpe=largest).exists()
    with pytest.raises(TokenListError, match=f"at most {largest}"):
        make_token_list(text, tmp_path / "other", nbpe=largest + 1)


def test_a_failed_token_list_leaves_the_finished_one_in_place(tmp_path):
    text = tmp_path / "text"
    text.write_text(TEXT)
    out = tmp_path / "bpe_unigram25"
    make_token_list(text, out, nbpe=25)
    before = _snapshot(out)
    with pytest.raises(TokenListError):
        make_token_list(text, out, nbpe=150)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bpe_unigram25", "text"]  # no temp folder


def test_a_token_list_killed_while_written_is_not_taken_for_a_finished_one(tmp_path, monkeypatch):
    import espnet2.bin.tokenize_text

    text = tmp_path / "text"
    text.write_text(TEXT)
    out = tmp_path / "tokens"
    make_token_list(text, out, nbpe=25)
    before = _snapshot(out)

    def killed(cmd):  # half of a token list written, then the process interrupted
        output = Path(cmd[cmd.index("--output") + 1])
        output.write_text("<blank>\n<unk>\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(espnet2.bin.tokenize_text, "main", killed)
    with pytest.raises(KeyboardInterrupt):
        make_token_list(text, out, nbpe=24)
    assert _snapshot(out) == before


@pytest.mark.parametrize("text, nbpe, message", [
    (TEXT, 5, r"5 unigram units cannot hold the text's characters .* it needs at least \d+; give --nbpe \d+ or more"),
    ("", 30, "no transcripts to train SentencePiece on"),
])
def test_other_sizes_the_text_cannot_give_are_explained(tmp_path, text, nbpe, message):
    path = tmp_path / "text"
    path.write_text(text)
    with pytest.raises(TokenListError, match=message):
        make_token_list(path, tmp_path / "tokens", nbpe=nbpe)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text"]


def test_make_token_list_command_fails_without_a_stack_trace(tmp_path):
    text = tmp_path / "text"
    text.write_text(TEXT)
    proc = subprocess.run([sys.executable, "-m", "espnet_omni.bin.make_token_list", "--text", str(text),
                           "--out_dir", str(tmp_path / "tokens")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert f"ERROR: {text}: too little text for 150 unigram units" in proc.stderr
    assert "--nbpe" in proc.stderr


# --- configs with unknown or mistyped keys ----------------------------------------------------

def _typo_config(tmp_path: Path, kind: str, name: str = "train.yaml") -> Path:
    """conf/tiny/omni_router.yaml with (a) an unknown top-level key, (b) a mistyped key in
    encoder_conf or (c) in model_conf."""
    config = yaml.safe_load((CONF / "tiny" / "omni_router.yaml").read_text())
    if kind == "top":
        config["max_epochs"] = 3
    elif kind == "encoder_conf":
        config["encoder_conf"]["num_expert"] = 8
    else:
        config["model_conf"]["load_balance_weigth"] = 0.1
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# key, the line it is on in the dumped YAML, what is suggested
TYPOS = {
    "top": ("'max_epochs' is not an option of ESPnet's ASR training", "did you mean 'max_epoch'?"),
    "encoder_conf": ("encoder_conf: 'num_expert' is not an option of encoder 'omni_router'",
                     "did you mean 'num_experts'?"),
    "model_conf": ("model_conf: 'load_balance_weigth' is not an option of model 'moe_espnet'",
                   "did you mean 'load_balance_weight'?"),
}


def _line_of(path: Path, key: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith(key + ":"))


@pytest.mark.parametrize("kind", sorted(TYPOS))
def test_training_command_names_config_line_and_key_before_training(tmp_path, kind):
    config = _typo_config(tmp_path, kind)
    key = TYPOS[kind][0].split("'")[1]
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\na\n<sos/eos>\n")
    proc = subprocess.run([
        sys.executable, "-m", "espnet_omni.bin.asr_train", "--config", str(config),
        "--iterator_type", "none", "--dry_run", "true", "--token_list", str(tokens),
        "--output_dir", str(tmp_path / "exp"),
    ], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr
    message, hint = TYPOS[kind]
    assert f"ERROR: {config}:{_line_of(config, key)}: {message} ({hint})" in proc.stderr
    assert not (tmp_path / "exp").exists()  # stopped before ESPnet started


def test_config_check_follows_the_command_line_class_and_reads_the_lm_task(tmp_path):
    from espnet2.tasks.asr import ASRTask
    from espnet2.tasks.lm import LMTask

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(yaml.safe_load((CONF / "tiny" / "omni_router.yaml").read_text())))
    check_config_file(config, ASRTask)
    # The dense twin has no experts: --encoder on the command line is the class checked.
    with pytest.raises(TrainingConfigError, match="'num_experts' is not an option of encoder 'dense_transformer'"):
        check_config_file(config, ASRTask, ["--config", str(config), "--encoder", "dense_transformer"])
    lm = tmp_path / "lm.yaml"
    lm.write_text((RECIPE_CONF / "train_lm_rnn.yaml").read_text().replace("nlayers:", "nlayer:"))
    with pytest.raises(TrainingConfigError, match=r"lm_conf: 'nlayer' is not an option of lm 'seq_rnn' "
                                                  r"\(did you mean 'nlayers'\?\)"):
        check_config_file(lm, LMTask)


def test_every_shipped_training_config_passes_the_check():
    from espnet2.tasks.asr import ASRTask
    from espnet2.tasks.lm import LMTask

    configs = sorted(CONF.glob("*/*.yaml")) + sorted(RECIPE_CONF.glob("**/train_asr_*.yaml"))
    assert len(configs) >= 15
    for config in configs:
        check_config_file(config, ASRTask)
    check_config_file(RECIPE_CONF / "train_lm_rnn.yaml", LMTask)


def test_an_ablation_with_a_mistyped_conf_key_fails_before_any_file_is_written(tmp_path):
    path = tmp_path / "jiter.yaml"
    path.write_text("models: [omni_router]\nconfig:\n  encoder_conf:\n    router_jiter: 0.01\n")
    ablation = read_ablation(path, ["omni_router"])
    with pytest.raises(AblationError, match=r"encoder_conf: 'router_jiter' is not an option of encoder "
                                            r"'omni_router' \(did you mean 'router_jitter'\?\)"):
        write_ablation_configs(ablation, {"omni_router": RECIPE_CONF / "train_asr_omni_router.yaml"},
                               tmp_path / "conf")
    assert not (tmp_path / "conf").exists()


# --- scores and results written whole ---------------------------------------------------------

def test_interrupted_scoring_leaves_no_stale_or_partial_score(tmp_path, monkeypatch):
    from espnet_omni.recipe import scoring

    for name, text in (("ref", "u1 the cat sat\nu2 a dog ran\n"), ("hyp", "u1 the cat sat\nu2 a dog\n")):
        (tmp_path / name).write_text(text)
    (tmp_path / "utt2spk").write_text("u1 s\nu2 s\n")
    out = tmp_path / "score_wer"
    score_dir(tmp_path / "ref", tmp_path / "hyp", tmp_path / "utt2spk", out, "python")
    assert (out / "utt_errors.tsv").read_text().count("\n") == 3
    (tmp_path / "hyp").write_text("u1 the cat\nu2 a dog ran\n")  # a new decoding

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(scoring, "score_python", killed)
    with pytest.raises(KeyboardInterrupt):
        score_dir(tmp_path / "ref", tmp_path / "hyp", tmp_path / "utt2spk", out, "python")
    # The previous decoding's scores are gone: the results stage says they are missing.
    assert not (out / "utt_errors.tsv").exists() and not (out / "result.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["hyp.trn", "ref.trn"]


def test_results_killed_while_written_keep_the_previous_file(tmp_path):
    results = tmp_path / "RESULTS.md"
    write_text_whole(results, "# Results\n| a | b |\n")
    with pytest.raises(KeyboardInterrupt):
        with open_whole(results) as out:
            out.write("# Results\n| c ")
            raise KeyboardInterrupt
    assert results.read_text() == "# Results\n| a | b |\n"
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]


# --- the recipe: preflight of stage 6, decoding resumed in stage 7 ----------------------------

@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A copy of the recipe after stages 1-7 of the smoke run with one model and greedy CTC."""
    top = tmp_path_factory.mktemp("checkout")
    root = top / "egs2" / "omni_asr" / "asr1"
    shutil.copytree(RECIPE, root, ignore=shutil.ignore_patterns(
        "data", "dump", "exp", "smoke", "downloads", "study"))
    (top / "conf").symlink_to(REPO / "conf")
    run_recipe(root, *RUN, "--stop_stage", "7")
    return root


def _state(folder: Path):
    """mtime and content of each file below folder."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.timeout(1200)
def test_failed_statistics_leave_the_previous_ones_and_name_the_config_key(recipe, tmp_path):
    """Stage 5 builds the statistics in <stats dir>.tmp: a failed run (here collect_stats
    refusing a mistyped config) leaves the finished ones as they were."""
    root = recipe
    stats = root / "smoke" / "exp" / "asr_stats_bpe40"
    before = _state(stats)
    config = _typo_config(tmp_path, "encoder_conf", "omni_router.yaml")
    proc = run_recipe(root, *RUN, "--asr_config_dir", str(tmp_path), "--stage", "5", "--stop_stage", "5",
                      check=False)
    assert proc.returncode != 0
    assert f"{config}:{_line_of(config, 'num_expert')}: {TYPOS['encoder_conf'][0]}" in proc.stderr
    assert _state(stats) == before


@pytest.mark.timeout(1200)
def test_stage_6_checks_every_config_before_any_model_trains(recipe, tmp_path):
    root = recipe
    conf = tmp_path / "conf"
    conf.mkdir()
    configs = {"dense_transformer": _typo_config(conf, "top", "dense_transformer.yaml"),
               "switch": _typo_config(conf, "encoder_conf", "switch.yaml"),
               "omni_router": _typo_config(conf, "model_conf", "omni_router.yaml")}
    exp = root / "smoke" / "exp"
    trained = _state(exp / "asr_omni_router")
    proc = run_recipe(root, *RUN, "--models", "dense_transformer switch omni_router", "--asr_config_dir",
                      str(conf), "--stage", "6", "--stop_stage", "6", check=False)
    assert proc.returncode != 0
    for kind, model in (("top", "dense_transformer"), ("encoder_conf", "switch"), ("model_conf", "omni_router")):
        message, hint = TYPOS[kind]
        key = message.split("'")[1]
        assert f"{configs[model]}:{_line_of(configs[model], key)}: {message} ({hint})" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Stage 6: training" not in proc.stdout
    assert not (exp / "asr_switch" / "train.log").exists()
    assert not (exp / "asr_dense_transformer" / "train.log").exists()
    after = _state(exp / "asr_omni_router")
    after.pop("config_check.log")
    assert after == trained


@pytest.mark.timeout(1200)
def test_decoding_resumes_with_the_jobs_that_did_not_finish(recipe):
    root = recipe
    model = root / "smoke" / "exp" / "asr_omni_router"
    decoded = model / DECODE
    work = model / f"{DECODE}.tmp"
    clean = {s: (decoded / s / "text").read_text() for s in ("test_clean", "test_noise")}
    assert all(clean.values())
    shutil.rmtree(decoded)

    # One audio file of test_noise unreadable: the job holding it fails, the others finish.
    utt, audio = (root / "smoke" / "data" / "test_noise" / "wav.scp").read_text().splitlines()[3].split()
    audio = root / audio if not os.path.isabs(audio) else Path(audio)
    original = audio.read_bytes()
    audio.write_bytes(b"not audio" * 100)
    try:
        proc = run_recipe(root, *RUN, "--stage", "7", "--stop_stage", "7", check=False)
    finally:
        audio.write_bytes(original)
    assert proc.returncode != 0 and "1 of 3 jobs failed" in proc.stderr
    logdir = work / "logdir"
    failed = next(n for n in (1, 2, 3) if f"test_noise/{utt}" in (logdir / f"keys.{n}.scp").read_text())
    finished = [n for n in (1, 2, 3) if n != failed]
    assert {p.name for p in logdir.glob("*.done")} == {f"asr_inference.{n}.done" for n in finished}
    assert not decoded.exists()

    # A job killed while writing: its partial output is there but it never finished.
    killed = finished.pop()
    (logdir / f"asr_inference.{killed}.done").unlink()
    for n in (failed, killed):
        partial = logdir / f"output.{n}" / "1best_recog" / "text"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(f"test_noise/{utt} HALF WRITT")
    kept = {n: (_state(logdir / f"output.{n}"), _state(logdir)[f"asr_inference.{n}.log"]) for n in finished}

    proc = run_recipe(root, *RUN, "--stage", "7", "--stop_stage", "7")
    assert f"jobs {finished[0]} of 3 finished before; decoding the others" in proc.stdout
    logdir = decoded / "logdir"
    for n in finished:  # not run again
        assert (_state(logdir / f"output.{n}"), _state(logdir)[f"asr_inference.{n}.log"]) == kept[n]
    for n in (failed, killed):
        assert "HALF WRITT" not in (logdir / f"output.{n}" / "1best_recog" / "text").read_text()
    assert {s: (decoded / s / "text").read_text() for s in clean} == clean
    assert not work.exists()


@pytest.mark.timeout(1200)
def test_unfinished_decoding_of_other_settings_is_discarded(recipe):
    """A <decode>.tmp left by a run with another model, decoding options or job count is not
    reused: its finished jobs' outputs are not those of this decoding."""
    root = recipe
    model = root / "smoke" / "exp" / "asr_omni_router"
    decoded = model / DECODE
    clean = {s: (decoded / s / "text").read_text() for s in ("test_clean", "test_noise")}
    shutil.rmtree(decoded)
    work = model / f"{DECODE}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    (work / "logdir").mkdir(parents=True)
    signature = "1234 56 3"  # another decoding's, with 3 jobs
    (work / "job_signature").write_text(signature + "\n")
    lines = [line.split()[0] for s in clean for line in clean[s].splitlines()]
    for n in (1, 2, 3):
        (work / "logdir" / f"asr_inference.{n}.done").touch()
        (work / "logdir" / f"output.{n}" / "1best_recog").mkdir(parents=True)
    (work / "logdir" / "output.1" / "1best_recog" / "text").write_text(
        "".join(f"test_clean/{utt} OTHER DECODING\n" for utt in lines))
    proc = run_recipe(root, *RUN, "--stage", "7", "--stop_stage", "7")
    assert "finished before" not in proc.stdout
    assert {s: (decoded / s / "text").read_text() for s in clean} == clean
