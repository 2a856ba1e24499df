"""The study's ablations: files read and checked, configs merged, every shipped ablation building
the model it describes, and the training noise it can add through ESPnet's preprocessor."""

import re

import numpy as np
import pytest
import soundfile
import yaml

from espnet_omni.configs import build_model_from_config
from espnet_omni.recipe.ablation import AblationError, merge_config, read_ablation, write_ablation_configs
from espnet_omni.synth.noisy_copy import write_noise_set

from conftest import REPO

RECIPE_CONF = REPO / "egs2" / "omni_asr" / "asr1" / "conf"
MODELS = ["dense_transformer", "switch", "omni_router"]
CONFIG_OF = {m: RECIPE_CONF / f"train_asr_{m}.yaml" for m in MODELS}


def test_merge_replaces_values_and_merges_mappings():
    base = {"encoder_conf": {"num_blocks": 6, "num_experts": 4}, "max_epoch": 11, "specaug": None,
            "best_model_criterion": [["valid", "cer_ctc", "min"]]}
    merged = merge_config(base, {"encoder_conf": {"num_experts": 8}, "max_epoch": 22,
                                 "specaug": "specaug", "best_model_criterion": [["valid", "loss", "min"]]})
    assert merged == {"encoder_conf": {"num_blocks": 6, "num_experts": 8}, "max_epoch": 22,
                      "specaug": "specaug", "best_model_criterion": [["valid", "loss", "min"]]}
    assert base["encoder_conf"]["num_experts"] == 4  # the base is left as it was


@pytest.mark.parametrize("text, message", [
    ("config:\n  max_epoch: 2\n  lr: 0.1: 2\n", r"bad\.yaml:3: not valid YAML: mapping values"),
    ("config: {max_epoch: 2}\nmodel: [switch]\n", r"unknown key\(s\) \['model'\]"),
    ("models: [switch]\n", "'config' must be a mapping"),
    ("models: [conformer]\nconfig: {max_epoch: 2}\n", r"models \['conformer'\] are not trained"),
    ("- max_epoch: 2\n", "an ablation is a mapping"),
])
def test_bad_ablation_files_are_named_with_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(AblationError, match=message):
        read_ablation(path, MODELS)


def test_an_option_espnet_does_not_have_fails_before_any_file_is_written(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("config:\n  max_epochs: 22\n")
    ablation = read_ablation(path, MODELS)
    assert ablation.models == MODELS and ablation.name == "typo"
    with pytest.raises(AblationError, match=r"typo\.yaml: \['max_epochs'\] are not options"):
        write_ablation_configs(ablation, CONFIG_OF, tmp_path / "conf")
    assert not (tmp_path / "conf").exists()


@pytest.mark.parametrize("name", sorted(p.stem for p in (RECIPE_CONF / "ablation").glob("*.yaml")))
def test_every_shipped_ablation_builds_the_models_it_describes(tmp_path, name):
    ablation = read_ablation(RECIPE_CONF / "ablation" / f"{name}.yaml", MODELS)
    written = write_ablation_configs(ablation, CONFIG_OF, tmp_path)
    assert [p.name for p in written] == [f"train_asr_{m}.yaml" for m in ablation.models]
    for model, path in zip(ablation.models, written):
        config = yaml.safe_load(path.read_text())
        base = yaml.safe_load(CONFIG_OF[model].read_text())
        built = build_model_from_config(path, 40)
        # What the ablation changes is in the config and in the model it builds; the rest is the
        # baseline's.
        for key, value in ablation.config.items():
            if isinstance(value, dict):
                for sub, sub_value in value.items():
                    assert config[key][sub] == sub_value
            else:
                assert config[key] == value
        assert config["encoder_conf"]["num_blocks"] == base["encoder_conf"]["num_blocks"]
        enc = ablation.config.get("encoder_conf", {})
        if "num_experts" in enc:
            assert all(r.num_experts == enc["num_experts"] for r in built.encoder.routers)
        if "router_jitter" in enc:
            assert all(r.jitter_eps == enc["router_jitter"] for r in built.encoder.routers)
        model_conf = ablation.config.get("model_conf", {})
        for option in ("router_loss_reduction", "load_balance_weight"):
            if option in model_conf:
                assert getattr(built, option) == model_conf[option]
        if ablation.config.get("specaug"):
            assert type(built.specaug).__name__ == "SpecAug"
        else:
            assert built.specaug is None


def test_training_noise_reaches_espnets_preprocessor_at_the_drawn_snr(tmp_path):
    from espnet2.train.preprocessor import CommonPreprocessor

    assert write_noise_set(tmp_path / "noise", recordings=2, seconds=2.0) == 6
    scp = (tmp_path / "noise" / "wav.scp").read_text().split("\n")
    assert scp[0].startswith("white00 ") and len(scp) == 7 and scp[-1] == ""
    samples, rate = soundfile.read(scp[1].split()[1])
    assert rate == 16000 and samples.size == 32000 and abs(np.abs(samples).max() - 0.5) < 1e-3
    # Written again from the same seed: the same noise.
    before = soundfile.read(scp[1].split()[1])[0]
    write_noise_set(tmp_path / "noise", recordings=2, seconds=2.0)
    np.testing.assert_array_equal(soundfile.read(scp[1].split()[1])[0], before)

    token_list = ["<blank>", "<unk>", "a", "<sos/eos>"]
    speech = (0.1 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)  # no peak normalisation
    np.random.seed(0)
    for snr_range, expected_snr in (("0_0", 0.0), ("10_10", 10.0)):
        pre = CommonPreprocessor(train=True, token_type="char", token_list=token_list,
                                 noise_scp=str(tmp_path / "noise" / "wav.scp"), noise_apply_prob=1.0,
                                 noise_db_range=snr_range)
        out = pre("u1", {"speech": speech.copy(), "text": "a"})["speech"]
        assert out.shape == (16000, 1)  # (time, channel), as ESPnet's frontend takes it in training
        noise = out[:, 0] - speech
        snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
        assert abs(snr - expected_snr) < 0.5


def test_command_prints_the_models_alone_and_names_a_bad_file(tmp_path):
    import subprocess
    import sys

    configs = [str(CONFIG_OF[m]) for m in MODELS]
    proc = subprocess.run([sys.executable, "-m", "espnet_omni.bin.make_ablation_configs", "--ablation",
                           str(RECIPE_CONF / "ablation" / "jitter.yaml"), "--configs", *configs,
                           "--output_dir", str(tmp_path / "conf")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "switch omni_router\n"  # what run_study.sh trains
    assert sorted(p.name for p in (tmp_path / "conf").iterdir()) == ["train_asr_omni_router.yaml", "train_asr_switch.yaml"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [switch]\nconfig:\n  optim_conf: {lr: 0.1\n")
    proc = subprocess.run([sys.executable, "-m", "espnet_omni.bin.make_ablation_configs", "--ablation", str(bad),
                           "--configs", *configs, "--output_dir", str(tmp_path / "bad_conf")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert re.search(r"ERROR: .*bad\.yaml:4: not valid YAML", proc.stderr), proc.stderr
    assert not (tmp_path / "bad_conf").exists()


def test_only_some_of_the_ablations_models(tmp_path):
    import subprocess
    import sys

    configs = [str(CONFIG_OF[m]) for m in MODELS]
    jitter = RECIPE_CONF / "ablation" / "jitter.yaml"
    command = [sys.executable, "-m", "espnet_omni.bin.make_ablation_configs", "--ablation", str(jitter),
               "--configs", *configs]
    proc = subprocess.run(command + ["--output_dir", str(tmp_path / "conf"), "--only", "omni_router"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "omni_router\n"
    assert [p.name for p in (tmp_path / "conf").iterdir()] == ["train_asr_omni_router.yaml"]
    # A model the ablation does not change is refused, and nothing is written.
    proc = subprocess.run(command + ["--output_dir", str(tmp_path / "dense_conf"), "--only", "dense_transformer"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "jitter.yaml: changes ['switch', 'omni_router'], not ['dense_transformer']" in proc.stderr
    assert not (tmp_path / "dense_conf").exists()
