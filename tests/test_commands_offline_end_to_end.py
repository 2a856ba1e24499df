"""The package's commands open no network connection and need nothing of the recipe extra.

The processes run in tests/sandbox (its sitecustomize): every host name lookup and every
non-local socket connection is recorded and fails, and the recipe extra's packages cannot be
imported, as on a core ``pip install espnet-omni``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONF, EXTRA_MODULES, SANDBOX, run_module, write_char_token_list, write_keys


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Run subprocesses (run_module copies os.environ) in the sandbox; returns its network log."""
    log = tmp_path / "network.log"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(SANDBOX), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMNI_TEST_NETWORK_LOG", str(log))
    monkeypatch.setenv("OMNI_TEST_BLOCKED_MODULES", ",".join(EXTRA_MODULES))
    return log


def _network_attempts(log: Path) -> str:
    return log.read_text() if log.exists() else ""


def test_the_sandbox_records_and_refuses_a_connection(sandbox):
    code = (
        "import urllib.request\n"
        "try:\n"
        "    urllib.request.urlopen('http://example.com', timeout=5)\n"
        "except OSError:\n"
        "    print('refused')\n"
        "try:\n"
        "    import matplotlib\n"
        "except ModuleNotFoundError:\n"
        "    print('blocked')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["refused", "blocked"]
    assert "getaddrinfo 'example.com'" in _network_attempts(sandbox)




@pytest.mark.timeout(300)
def test_train_and_decode_offline_without_the_recipe_extra(sandbox, tone_corpus, tmp_path):
    train, dev = tone_corpus["train"], tone_corpus["dev"]
    # Unsorted batches read only the keys: no collect_stats run (utterance MVN, no stats).
    run_module(
        "espnet_omni.bin.asr_train", "--config", str(CONF / "tiny" / "omni_router.yaml"),
        "--token_type", "char", "--token_list", str(write_char_token_list(train / "text", tmp_path / "tokens.txt")),
        "--ngpu", "0", "--num_workers", "0", "--batch_type", "unsorted", "--max_epoch", "1",
        "--train_data_path_and_name_and_type", f"{train}/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", f"{train}/text,text,text",
        "--valid_data_path_and_name_and_type", f"{dev}/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", f"{dev}/text,text,text",
        "--train_shape_file", str(write_keys(train, tmp_path / "train.keys")),
        "--valid_shape_file", str(write_keys(dev, tmp_path / "dev.keys")),
        "--output_dir", "exp", cwd=tmp_path,
    )
    exp = tmp_path / "exp"
    assert (exp / "1epoch.pth").exists()
    config = (exp / "config.yaml").read_text()
    # Without matplotlib and tensorboard their loggers default to off (ESPnet's defaults are on
    # and fail), and the epoch ends cleanly.
    assert "use_matplotlib: false" in config and "use_tensorboard: false" in config
    assert not (exp / "images").exists() and not (exp / "tensorboard").exists()

    run_module(
        "espnet_omni.bin.asr_inference", "--batch_size", "1", "--ngpu", "0",
        "--data_path_and_name_and_type", f"{dev}/wav.scp,speech,sound",
        "--asr_train_config", "exp/config.yaml", "--asr_model_file", "exp/1epoch.pth",
        "--ctc_weight", "1.0", "--beam_size", "1", "--lm_weight", "0.0",
        "--output_dir", "decode", cwd=tmp_path,
    )
    decoded = {line.split(maxsplit=1)[0] for line in (tmp_path / "decode" / "1best_recog" / "text").read_text().splitlines()}
    assert decoded == {line.split()[0] for line in (dev / "wav.scp").read_text().splitlines()}
    assert _network_attempts(sandbox) == ""

