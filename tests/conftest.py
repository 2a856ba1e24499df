"""Shared fixtures: a small tone-sequence corpus generated on the fly."""

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# On PYTHONPATH, its sitecustomize runs subprocesses without network and without chosen modules.
SANDBOX = REPO / "tests" / "sandbox"
# The tests run offline: the sandbox's network guard is loaded into this process and, through
# PYTHONPATH, into every process a test starts; an attempt anywhere fails the run.
NETWORK_LOG = Path(tempfile.gettempdir()) / f"omni-test-network-{os.getpid()}.log"
NETWORK_LOG.unlink(missing_ok=True)
os.environ["OMNI_TEST_NETWORK_LOG"] = str(NETWORK_LOG)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SANDBOX), os.environ.get("PYTHONPATH")]))
_sandbox = importlib.util.spec_from_file_location("omni_test_sandbox", SANDBOX / "sitecustomize.py")
_sandbox.loader.exec_module(importlib.util.module_from_spec(_sandbox))
# The top-level modules of the recipe extra's packages (setup.py), and transformers (hf extra).
EXTRA_MODULES = (
    "matplotlib", "tensorboard", "whisper_normalizer", "espeakng_loader", "lhotse", "desphere",
    "desphere_native", "soxr", "huggingface_hub", "transformers",
)

# Each letter is a tone; words are letter sequences. Learnable by a tiny CTC model in seconds.
LETTERS = {"a": 300.0, "b": 500.0, "c": 750.0, "d": 1100.0, "e": 1600.0}
WORDS = ["ab", "cad", "bee", "dab", "ace", "bad"]


def make_tone_corpus(root: Path, num_utts: int, seed: int, prefix: str) -> Path:
    """Write a Kaldi-style data dir (wav.scp, text, utt2spk, spk2utt) of tone sequences."""
    rng = np.random.default_rng(seed)
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    fs = 16000
    scp, text, utt2spk = [], [], []
    for i in range(num_utts):
        words = list(rng.choice(WORDS, size=rng.integers(1, 4)))
        pieces = []
        for word in words:
            for letter in word:
                dur = rng.uniform(0.08, 0.12)
                t = np.arange(int(dur * fs)) / fs
                pieces.append(0.3 * np.sin(2 * np.pi * LETTERS[letter] * t))
            pieces.append(np.zeros(int(0.1 * fs)))
        audio = np.concatenate(pieces) + 0.005 * rng.standard_normal(sum(map(len, pieces)))
        utt = f"{prefix}spk{i % 3}-{i:04d}"
        path = wav_dir / f"{utt}.wav"
        soundfile.write(path, audio.astype(np.float32), fs, subtype="PCM_16")
        scp.append(f"{utt} {path}")
        text.append(f"{utt} {' '.join(words).upper()}")
        utt2spk.append(f"{utt} {prefix}spk{i % 3}")
    for name, lines in (("wav.scp", scp), ("text", text), ("utt2spk", utt2spk)):
        (root / name).write_text("\n".join(sorted(lines)) + "\n")
    spk2utt = {}
    for line in sorted(utt2spk):
        utt, spk = line.split()
        spk2utt.setdefault(spk, []).append(utt)
    (root / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items())))
    return root


def write_char_token_list(text_file: Path, out: Path) -> Path:
    """A character token list (ESPnet's specials around the characters of a Kaldi text file)."""
    chars = sorted({c for line in text_file.read_text().splitlines()
                    for c in line.split(maxsplit=1)[1] if c != " "})
    out.write_text("\n".join(["<blank>", "<unk>", "<space>", *chars, "<sos/eos>"]) + "\n")
    return out


def write_keys(data_dir: Path, out: Path) -> Path:
    """The utterance ids of a data dir's wav.scp, one per line (ESPnet's --*_shape_file input)."""
    out.write_text("".join(line.split()[0] + "\n" for line in (data_dir / "wav.scp").read_text().splitlines()))
    return out


def make_untrained_experiment(root: Path, name: str, tokens: Path) -> Path:
    """An ESPnet experiment folder ``root/asr_<name>`` (config.yaml, valid.cer_ctc.best.pth) of
    conf/tiny/<name>.yaml with its initial weights (seed 0)."""
    import torch
    from espnet2.tasks.asr import ASRTask
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    import espnet_omni  # noqa: F401  (registers the classes)

    exp = root / f"asr_{name}"
    args = ASRTask.get_parser().parse_args([
        "--config", str(CONF / "tiny" / f"{name}.yaml"), "--token_list", str(tokens),
        "--token_type", "char", "--output_dir", str(exp),
    ])
    torch.manual_seed(0)
    model = ASRTask.build_model(args)
    exp.mkdir(parents=True)
    torch.save(model.state_dict(), exp / "valid.cer_ctc.best.pth")
    with open(exp / "config.yaml", "w") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    return exp


def write_tone_token_list(out: Path) -> Path:
    """The character token list of the tone corpus (ESPnet's specials around A-E)."""
    out.write_text("\n".join(["<blank>", "<unk>", "<space>", *"ABCDE", "<sos/eos>"]) + "\n")
    return out


def run_module(module: str, *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` and fail the test with its output if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"python -m {module} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    return {
        "train": make_tone_corpus(root / "train", 48, seed=0, prefix="tr"),
        "dev": make_tone_corpus(root / "dev", 8, seed=1, prefix="dv"),
    }


def _data_args(kind: str, data_dir: Path):
    return [
        f"--{kind}_data_path_and_name_and_type", f"{data_dir}/wav.scp,speech,sound",
        f"--{kind}_data_path_and_name_and_type", f"{data_dir}/text,text,text",
    ]




@pytest.fixture(scope="session")
def prepared(tone_corpus, tmp_path_factory):
    """A tiny Omni-router training setup on the tone corpus: token list and feature statistics
    (collect_stats through the wrapper); returns (root, training arguments, dev dir)."""
    root = tmp_path_factory.mktemp("asr")
    train, dev = tone_corpus["train"], tone_corpus["dev"]
    tokens = write_char_token_list(train / "text", root / "tokens.txt")
    common = [
        "--config", str(CONF / "tiny" / "omni_router.yaml"), "--token_type", "char",
        "--token_list", str(tokens), "--non_linguistic_symbols", "none", "--cleaner", "none",
        "--g2p", "none", "--use_preprocessor", "true", "--ngpu", "0", "--num_workers", "0",
        *_data_args("train", train), *_data_args("valid", dev),
    ]
    run_module(
        "espnet_omni.bin.asr_train", *common, "--collect_stats", "true",
        "--batch_type", "unsorted",
        "--train_shape_file", str(write_keys(train, root / "train.keys")),
        "--valid_shape_file", str(write_keys(dev, root / "dev.keys")),
        "--output_dir", "stats", cwd=root,
    )
    assert (root / "stats" / "train" / "feats_stats.npz").exists()
    train_args = common + [
        "--train_shape_file", "stats/train/speech_shape",
        "--train_shape_file", "stats/train/text_shape",
        "--valid_shape_file", "stats/valid/speech_shape",
        "--valid_shape_file", "stats/valid/text_shape",
        "--fold_length", "80000", "--fold_length", "150",
        # Relative, as a recipe stores it: packing rewrites paths relative to the root.
        "--normalize", "global_mvn", "--normalize_conf", "stats_file=stats/train/feats_stats.npz",
    ]
    return root, train_args, dev


def pytest_sessionfinish(session, exitstatus):
    attempts = NETWORK_LOG.read_text() if NETWORK_LOG.exists() else ""
    NETWORK_LOG.unlink(missing_ok=True)
    if attempts:
        sys.stderr.write(f"\nNetwork access attempted during the tests (refused):\n{attempts}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
