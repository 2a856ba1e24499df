"""The core install and the recipe extra: the core imports nothing of the extra, a missing
package of it is named with its install command, and the training commands' ESPnet loggers
default to what is installed."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from conftest import CONF, EXTRA_MODULES, REPO, SANDBOX

from espnet_omni import extras, training_logs
from espnet_omni.extras import MissingExtraError, require_extra

INSTALL = "pip install 'espnet-omni[recipe]'"


def test_install_command_names_the_extra():
    assert extras.install_command() == INSTALL
    assert extras.install_command("hf") == "pip install 'espnet-omni[hf]'"


def test_require_extra_returns_the_module():
    import json

    assert require_extra("json", "Reading JSON") is json


def test_a_missing_package_names_what_needs_it_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "whisper_normalizer", None)  # as if not installed
    with pytest.raises(MissingExtraError) as info:
        require_extra("whisper_normalizer.english", "Scoring's text normalisation")
    assert isinstance(info.value, ModuleNotFoundError) and info.value.name == "whisper_normalizer"
    message = str(info.value)
    assert message.startswith("Scoring's text normalisation needs the Python package 'whisper_normalizer'")
    assert message.endswith(INSTALL)


def test_a_missing_dependency_of_an_installed_package_is_raised_unchanged(tmp_path, monkeypatch):
    (tmp_path / "pkg_with_missing_dependency").mkdir()
    (tmp_path / "pkg_with_missing_dependency" / "__init__.py").write_text("import a_module_nobody_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require_extra("pkg_with_missing_dependency", "Something")
    assert not isinstance(info.value, MissingExtraError)
    assert info.value.name == "a_module_nobody_installed"


def _scoring_normalize(monkeypatch, tmp_path):
    from espnet_omni.recipe import scoring

    monkeypatch.setattr(scoring, "_normalizer", None)
    scoring.normalize("Hello")


def _librispeech(monkeypatch, tmp_path):
    from espnet_omni.corpora import librispeech

    librispeech.list_part(tmp_path, "test-clean")


def _espeak(monkeypatch, tmp_path):
    from espnet_omni.synth.espeak import Synthesizer

    Synthesizer()


def _shorten_sphere(monkeypatch, tmp_path):
    from espnet_omni.corpora.audio import AudioFile

    header = b"NIST_1A\n   1024\nsample_coding -s25 pcm,embedded-shorten-v2.00\nend_head\n"
    (tmp_path / "a.sph").write_bytes(header.ljust(1024, b" ") + b"\0" * 64)
    AudioFile(tmp_path / "a.sph")


def _resample_corpus_audio(monkeypatch, tmp_path):
    from espnet_omni.corpora.audio import AudioFile

    soundfile.write(tmp_path / "a.wav", np.zeros(800, np.float32), 8000)
    with AudioFile(tmp_path / "a.wav") as audio:
        audio.read()


def _synth_augment(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "espnet_omni.synth.augment", raising=False)
    import espnet_omni.synth.augment  # noqa: F401


def _routing_pictures(monkeypatch, tmp_path):
    from espnet_omni.analysis.routing_plots import write_pictures

    write_pictures({"models": {"m": {"num_experts": 2, "moe_blocks": [1], "layers": [
        {"block": 1, "load": [0.5, 0.5]}]}}}, tmp_path)


def _publish_upload(monkeypatch, tmp_path):
    from espnet_omni.recipe.publish import upload_model_folder

    upload_model_folder(tmp_path, "someone/model")


@pytest.mark.parametrize("package, use", [
    ("whisper_normalizer", _scoring_normalize),
    ("lhotse", _librispeech),
    ("espeakng_loader", _espeak),
    ("desphere", _shorten_sphere),
    ("soxr", _resample_corpus_audio),
    ("soxr", _synth_augment),
    ("huggingface_hub", _publish_upload),
    ("matplotlib", _routing_pictures),
])
def test_recipe_code_names_the_install_command(package, use, monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(MissingExtraError, match=rf"needs the Python package '{package}'.*\[recipe\]"):
        use(monkeypatch, tmp_path)


CORE_SCRIPT = f"""
import sys
import torch
import espnet_omni, espnet_omni.encoder, espnet_omni.model, espnet_omni.registration
import espnet_omni.moe, espnet_omni.moe.dispatch, espnet_omni.moe.eager_experts
import espnet_omni.moe.experts, espnet_omni.moe.feed_forward, espnet_omni.moe.grouped_mm_experts
import espnet_omni.moe.layer, espnet_omni.moe.losses, espnet_omni.moe.router
import espnet_omni.analysis.params, espnet_omni.analysis.routing_stats
import espnet_omni.analysis.dependence, espnet_omni.analysis.routing_counts
import espnet_omni.analysis.routing_capture
import espnet_omni.launch, espnet_omni.configs, espnet_omni.greedy_ctc, espnet_omni.training_logs
import espnet_omni.extras, espnet_omni.lazy_g2p_en
import yaml
from espnet2.tasks.asr import ASRTask

conf = yaml.safe_load(open({str(CONF / "tiny" / "omni_router.yaml")!r}))
parser = ASRTask.get_parser()
parser.set_defaults(**conf)
args = parser.parse_args(["--token_list", "<blank>,a,b,c,<sos/eos>"])
args.token_list = args.token_list.split(",")
model = ASRTask.build_model(args)
torch.manual_seed(0)
speech = torch.randn(2, 8000)
loss, stats, _ = model(speech, torch.tensor([8000, 6000]), torch.tensor([[1, 2, 3], [2, 3, -1]]),
                       torch.tensor([3, 2]))
loss.backward()
assert torch.isfinite(loss) and "loss_lb" in stats, stats
print(type(model).__name__, type(model.encoder).__name__)
"""


@pytest.mark.timeout(300)
def test_the_core_imports_no_package_of_the_extras(tmp_path):
    env = {"PYTHONPATH": str(SANDBOX), "OMNI_TEST_BLOCKED_MODULES": ",".join(EXTRA_MODULES),
           "OMNI_TEST_NETWORK_LOG": os.environ["OMNI_TEST_NETWORK_LOG"],
           "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", CORE_SCRIPT], capture_output=True, text=True,
                          env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines()[-1].split() == ["MoEESPnetASRModel", "OmniRouterEncoder"]


@pytest.fixture(scope="module", params=["asr", "lm"])
def task(request):
    import espnet_omni  # noqa: F401  (registers the classes, as the commands do)

    if request.param == "asr":
        from espnet2.tasks.asr import ASRTask

        return ASRTask
    from espnet2.tasks.lm import LMTask

    return LMTask


def _pretend_installed(monkeypatch, installed):
    monkeypatch.setattr(training_logs, "installed", installed)
    # The packages may really be missing (a core install): importing them is not the point here.
    monkeypatch.setattr(training_logs, "require_extra", lambda package, purpose: None)


@pytest.mark.parametrize("present", [True, False])
def test_training_loggers_default_to_whether_their_packages_are_installed(task, present, monkeypatch):
    _pretend_installed(monkeypatch, lambda package: present)
    args = training_logs.parse_args(task, [])
    assert (args.use_matplotlib, args.use_tensorboard) == (present, present)


def test_a_logger_turned_on_without_its_package_fails_naming_the_install_command(task, monkeypatch):
    monkeypatch.setattr(training_logs, "installed", lambda package: package != "matplotlib")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"--use_matplotlib true.*'matplotlib'.*\[recipe\]"):
        training_logs.parse_args(task, ["--use_matplotlib", "true"])
    # Only collecting statistics, ESPnet plots nothing.
    assert training_logs.parse_args(task, ["--use_matplotlib", "true", "--collect_stats", "true"]).use_matplotlib
    with pytest.raises(SystemExit, match=r"ERROR: .*pip install 'espnet-omni\[recipe\]'"):
        training_logs.train(task, ["--use_matplotlib", "true"])


def test_a_config_file_still_sets_the_loggers(task, monkeypatch, tmp_path):
    _pretend_installed(monkeypatch, lambda package: True)
    (tmp_path / "c.yaml").write_text("use_matplotlib: false\n")
    args = training_logs.parse_args(task, ["--config", str(tmp_path / "c.yaml")])
    assert (args.use_matplotlib, args.use_tensorboard) == (False, True)
