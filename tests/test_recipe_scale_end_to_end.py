"""egs2/omni_asr/asr1/run_librispeech.sh end to end on the CPU: the GPU recipe's every stage
(preflight, LibriSpeech preparation, tokenizer, statistics, a few steps of the three models with
speed perturbation and split training lists, checkpoint averaging, decoding, RESULTS.md) over a
LibriSpeech-layout tree written by the test, with tiny models; then one more epoch through
torchrun (2 CPU processes); run_libriheavy.sh on segments of long LibriLight-layout recordings;
and the GPU configs' model part against the package's conf/."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from corpus_fixtures import write_libriheavy, write_librispeech

RECIPE = REPO / "egs2" / "omni_asr" / "asr1"
MODELS = ["dense_transformer", "switch", "omni_router"]
# Speakers are disjoint across parts, as in LibriSpeech.
PARTS = {
    "train-clean-100": (("103", "1240"), ("1034", "121119")),
    "train-clean-360": (("1001", "134707"),),
    "train-other-500": (("1006", "135212"),),
    "dev-clean": (("1272", "128104"),),
    "dev-other": (("116", "288045"),),
    "test-clean": (("1089", "134686"), ("121", "121726")),
    "test-other": (("1688", "142285"),),
}
DB_VARIABLES = ("TEDLIUM3", "WSJ0", "COMMONVOICE", "FLEURS", "VOXPOPULI", "AMI", "CHIME6", "EVAL2000",
                "LIBRIHEAVY", "LIBRILIGHT")
# What makes the 8-GPU run a CPU run of minutes: tiny models, a few steps, a tiny BPE.
CPU_OVERRIDES = (
    "--ngpu", "0", "--inference_ngpu", "0", "--nj", "1", "--inference_nj", "1", "--train_jobs", "3",
    "--asr_config_dir", "../../../conf/tiny", "--nbpe", "30",
    "--asr_args", "--max_epoch 1 --num_iters_per_epoch 4 --batch_size 4 --num_workers 0",
    "--num_splits_asr", "2",
)


def run_script(root: Path, script: str, *args: str, corpora: Path, check: bool = True,
               **db: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", LIBRISPEECH=str(corpora), **{v: "" for v in DB_VARIABLES})
    env.update(db)
    proc = subprocess.run([f"./{script}", "--python", sys.executable, *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    if check and proc.returncode != 0:
        pytest.fail(f"{script} {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def copy_recipe(top: Path) -> Path:
    """A copy of the recipe beside the package's conf/ (the tiny configs)."""
    root = top / "egs2" / "omni_asr" / "asr1"
    shutil.copytree(RECIPE, root, ignore=shutil.ignore_patterns("data", "dump", "exp", "smoke", "downloads"))
    (top / "conf").symlink_to(REPO / "conf")
    return root


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    """A copy of the recipe after run_librispeech.sh on the CPU."""
    root = copy_recipe(tmp_path_factory.mktemp("checkout"))
    corpora = tmp_path_factory.mktemp("corpora")
    written = {}
    for part, speakers in PARTS.items():
        written[part] = write_librispeech(corpora, part, speakers=speakers, per_chapter=3, seconds=1.0)
    proc = run_script(root, "run_librispeech.sh", *CPU_OVERRIDES, corpora=corpora)
    return root, proc, written, corpora


@pytest.mark.timeout(1200)
def test_run_librispeech_goes_through_every_stage(scale_run):
    root, proc, written, _ = scale_run
    for stage in range(0, 13):
        assert f"Stage {stage}:" in proc.stdout, stage
    data = root / "data"
    train_ids = [line.split()[0] for line in (data / "librispeech_train_960" / "text").read_text().splitlines()]
    assert sorted(train_ids) == sorted(
        u for part in ("train-clean-100", "train-clean-360", "train-other-500") for u in written[part])
    dev_ids = [line.split()[0] for line in (data / "librispeech_dev" / "text").read_text().splitlines()]
    assert sorted(dev_ids) == sorted(u for part in ("dev-clean", "dev-other") for u in written[part])

    exp = root / "exp" / "librispeech"
    assert (root / "data" / "token_list" / "librispeech" / "bpe_unigram30" / "bpe.model").exists()
    split = exp / "asr_stats_bpe30" / "splits2"
    assert (split / "wav.scp" / "num_splits").read_text().strip() == "2"
    for model in MODELS:
        model_dir = exp / f"asr_{model}"
        config = yaml.safe_load((model_dir / "config.yaml").read_text())
        # Speed perturbation on the fly: ESPnet's preprocessor, 0.9 and 1.1 two times in three.
        assert config["preprocessor_conf"]["data_aug_effects"] == [
            [1.0, "speed_perturb", {"factor": 0.9}], [1.0, "speed_perturb", {"factor": 1.1}]]
        assert config["preprocessor_conf"]["data_aug_prob"] == pytest.approx(2 / 3, abs=1e-5)
        assert config["multiple_iterator"] is True
        assert config["train_data_path_and_name_and_type"][0] == [str((split / "wav.scp").relative_to(root)), "speech", "sound"]
        assert (model_dir / "valid.cer_ctc.ave.pth").exists()  # ESPnet's n-best average
        decode = model_dir / "decode_greedy_ctc_valid.cer_ctc.ave"
        for test_set, part in (("librispeech_test_clean", "test-clean"), ("librispeech_test_other", "test-other")):
            hyps = (decode / test_set / "text").read_text().splitlines()
            assert [line.split()[0] for line in hyps] == sorted(written[part])

    results = (exp / "RESULTS.md").read_text()
    assert "| model | AMI-IHM | CHiME-6 |" in results
    assert "| utterances | - | - | - | - | - | - | 6 | 3 | - | - | - |" in results
    assert "Not evaluated: AMI-IHM" in results
    for model in MODELS:
        assert f"| {model} |" in results
        assert (exp / f"asr_{model}" / f"asr_{model}.zip").exists()


@pytest.mark.timeout(600)
def test_one_more_epoch_through_torchrun(scale_run):
    """--dist_launcher torchrun: two CPU processes (gloo) resume the finished run for an epoch."""
    root, _, _, corpora = scale_run
    model_dir = root / "exp" / "librispeech" / "asr_omni_router"
    proc = run_script(root, "run_librispeech.sh", *CPU_OVERRIDES, "--stage", "6", "--stop_stage", "6",
                      "--models", "omni_router", "--dist_launcher", "torchrun", "--nproc_per_node", "2",
                      "--asr_args", "--max_epoch 2 --num_iters_per_epoch 4 --batch_size 4 --num_workers 0",
                      corpora=corpora)
    assert "launcher torchrun" in proc.stdout
    log = (model_dir / "train.log").read_text()
    # ESPnet prefixes a distributed run's log lines with [<host>:<rank>/<world size>].
    assert re.search(r"\[[^\]\s]+:0/2\] .*The training was finished at 2 epochs", log), log[-3000:]
    assert (model_dir / "2epoch.pth").exists()


@pytest.mark.timeout(1200)
def test_run_libriheavy_trains_on_segments_of_long_recordings(tmp_path):
    """Libriheavy's data dirs have segments: statistics, split lists, training and the dev set
    read them as kaldi_segments, cut from the long recordings in place."""
    root = copy_recipe(tmp_path / "checkout")
    corpora, heavy, light = tmp_path / "corpora", tmp_path / "libriheavy", tmp_path / "librilight"
    for part in ("test-clean", "test-other"):
        write_librispeech(corpora, part, speakers=PARTS[part], per_chapter=2)
    written = write_libriheavy(heavy, light, "small", speakers=("100", "2043"), files_per_speaker=2,
                               seconds=12.0, cuts_per_file=4)
    write_libriheavy(heavy, light, "dev", speakers=("3000",), seconds=12.0, cuts_per_file=3)
    run_script(root, "run_libriheavy.sh", "--subset", "small", *CPU_OVERRIDES, "--models", "omni_router",
               "--nbpe", "24", "--stop_stage", "9", corpora=corpora, LIBRIHEAVY=str(heavy), LIBRILIGHT=str(light))
    train = root / "dump" / "libriheavy_small" / "raw" / "libriheavy_small"
    assert len((train / "segments").read_text().splitlines()) == len(written)
    assert len((train / "wav.scp").read_text().splitlines()) == 4  # the long recordings, not copies
    exp = root / "exp" / "libriheavy_small"
    split = exp / "asr_stats_bpe24" / "splits2"
    assert (split / "segments" / "wav.scp").exists()  # beside the split segments, for the reader
    config = yaml.safe_load((exp / "asr_omni_router" / "config.yaml").read_text())
    assert config["train_data_path_and_name_and_type"][0] == [
        str((split / "segments").relative_to(root)), "speech", "kaldi_segments"]
    assert config["valid_data_path_and_name_and_type"][0][1:] == ["speech", "kaldi_segments"]
    assert "| omni_router |" in (exp / "RESULTS.md").read_text()


def test_scale_options_are_checked_before_any_stage(tmp_path):
    root = copy_recipe(tmp_path / "checkout")
    cases = {
        ("--num_nodes", "2"): "needs --dist_launcher torchrun",
        ("--num_nodes", "2", "--dist_launcher", "torchrun"): "needs --rdzv_endpoint",
        ("--dist_launcher", "mpi"): "must be auto, torchrun or slurm",
        ("--speed_perturb_factors", "0.9 fast"): "'fast' is not a positive number",
    }
    for args, message in cases.items():
        proc = run_script(root, "run_librispeech.sh", *args, corpora=tmp_path, check=False)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
        assert "Stage 0:" not in proc.stdout


@pytest.mark.parametrize("corpus", ["librispeech", "libriheavy"])
@pytest.mark.parametrize("model", MODELS)
def test_gpu_configs_keep_the_release_shape(corpus, model):
    """The recipe's GPU configs change only training settings of the package's conf/libriheavy."""
    gpu = yaml.safe_load((RECIPE / "conf" / corpus / f"train_asr_{model}.yaml").read_text())
    shape = yaml.safe_load((REPO / "conf" / "libriheavy" / f"{model}.yaml").read_text())
    for key in ("encoder", "encoder_conf", "frontend", "frontend_conf", "specaug", "specaug_conf", "model", "model_conf"):
        assert gpu[key] == shape[key], key
    assert gpu["use_amp"] is True and gpu["batch_type"] == "numel" and gpu["keep_nbest_models"] == 10
    assert gpu["best_model_criterion"] == [["valid", "cer_ctc", "min"]]
