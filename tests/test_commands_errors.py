"""Bad configuration values fail with a message naming the field and what to do."""

import os
import re
import subprocess
import sys
import zipfile

import pytest
import yaml

import espnet_omni  # noqa: F401
from espnet2.bin import asr_inference, asr_train
from espnet_omni.launch import run

from conftest import CONF


def dry_run(tmp_path, encoder_conf_changes, encoder=None):
    config = yaml.safe_load((CONF / "tiny" / "omni_router.yaml").read_text())
    config["encoder_conf"].update(encoder_conf_changes)
    if encoder:
        config["encoder"] = encoder
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\na\n<sos/eos>\n")
    run(asr_train.main, [
        "--config", str(path), "--iterator_type", "none", "--dry_run", "true",
        "--output_dir", str(tmp_path / "out"), "--token_list", str(tokens),
    ])


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"num_expert": 4}, r"unknown option\(s\) 'num_expert' \(did you mean 'num_experts'\?\)"),
        ({"num_experts": 0}, r"num_experts must be >= 1, got 0"),
        ({"num_experts": 2, "top_k": 3}, r"top_k must be between 1 and num_experts=2, got 3"),
        ({"capacity_factor": 0.0}, r"capacity_factor must be > 0 or null \(dropless\)"),
        ({"eval_capacity_factor": -1.0}, r"eval_capacity_factor must be > 0"),
        ({"moe_layers": "some"}, r"moe_layers must be one of"),
        ({"moe_layers": [0, 2]}, r"moe_layers lists block numbers 1..num_blocks=2"),
        ({"input_layer": "conv9"}, r"input_layer must be one of"),
        ({"activation_type": "relu6"}, r"activation_type must be one of"),
    ],
)
def test_bad_encoder_values(tmp_path, changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        dry_run(tmp_path, changes)


def test_dense_twin_rejects_moe_options(tmp_path):
    with pytest.raises(ValueError, match="encoder 'dense_transformer': unknown option.*num_experts"):
        dry_run(tmp_path, {}, encoder="dense_transformer")


def test_unknown_encoder_in_stored_config_says_what_to_do(tmp_path, capsys):
    dry_run(tmp_path, {})  # a complete stored config, as training writes it
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    config["encoder"] = "omni_ruter"
    stored = tmp_path / "config.yaml"
    stored.write_text(yaml.safe_dump(config))
    (tmp_path / "wav.scp").write_text("")
    with pytest.raises(SystemExit) as err:
        run(asr_inference.main, [
            "--asr_train_config", str(stored), "--output_dir", str(tmp_path / "out"),
            "--data_path_and_name_and_type", f"{tmp_path}/wav.scp,speech,sound",
            "--ngpu", "0",
        ])
    message = str(err.value)
    assert str(stored) in message
    assert "encoder 'omni_ruter' is not a registered encoder" in message
    assert "Did you mean 'omni_router'?" in message


@pytest.mark.parametrize(
    "options, pattern",
    [
        (["--ngpu", "1"], r"--quantize_asr_model: .* run on the CPU, use --ngpu 0"),
        (["--quantize_modules", "Linear", "Linnear"], r"--quantize_modules: \['Linnear'\] are not"),
    ],
)
def test_greedy_decoder_rejects_bad_quantization_options(tmp_path, options, pattern):
    proc = subprocess.run([
        sys.executable, "-m", "espnet_omni.bin.asr_inference_ctc",
        "--asr_train_config", str(tmp_path / "config.yaml"), "--asr_model_file",
        str(tmp_path / "model.pth"), "--output_dir", str(tmp_path / "out"),
        "--data_path_and_name_and_type", f"{tmp_path}/wav.scp,speech,sound",
        "--quantize_asr_model", "true", *options,
    ], capture_output=True, text=True)
    assert proc.returncode == 2
    assert re.search(pattern, proc.stderr)
    assert not (tmp_path / "out").exists()


def test_registration_is_idempotent_and_type_checked():
    from espnet2.asr.encoder.abs_encoder import AbsEncoder
    from espnet2.tasks.asr import encoder_choices, model_choices
    from espnet_omni import registration
    from espnet_omni.encoder import SwitchEncoder

    before = dict(encoder_choices.classes), dict(model_choices.classes)
    registration.register()
    registration.register()
    assert (dict(encoder_choices.classes), dict(model_choices.classes)) == before
    assert list(encoder_choices.choices()).count("omni_router") == 1

    class NotAnEncoder:
        pass

    with pytest.raises(TypeError, match="not a AbsEncoder"):
        registration._add(encoder_choices, "bogus", NotAnEncoder, AbsEncoder)
    with pytest.raises(RuntimeError, match="already registered"):
        registration._add(encoder_choices, "transformer", SwitchEncoder, AbsEncoder)
    assert "bogus" not in encoder_choices.classes


@pytest.mark.parametrize("order", ["plugin first", "espnet first"])
def test_import_espnet_omni_registers_in_either_import_order(order, tmp_path):
    imports = ["import espnet_omni", "import espnet2.tasks.asr as asr"]
    env = dict(os.environ)
    if order == "espnet first":
        imports.reverse()
        # Imported before the plugin, ESPnet runs g2p_en's check for its NLTK data, which
        # downloads what is missing: give it the (empty) archives it looks for.
        for archive in ("taggers/averaged_perceptron_tagger_eng.zip", "corpora/cmudict.zip"):
            (tmp_path / archive).parent.mkdir(parents=True, exist_ok=True)
            zipfile.ZipFile(tmp_path / archive, "w").close()
        env["NLTK_DATA"] = str(tmp_path)
    code = "; ".join(imports + [
        "print(sorted(set(asr.encoder_choices.choices()) & {'omni_router', 'switch', 'dense_transformer'}),"
        " 'moe_espnet' in asr.model_choices.choices())"
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "['dense_transformer', 'omni_router', 'switch'] True"


def test_import_espnet_omni_alone_does_not_import_espnet():
    code = "import sys, espnet_omni; print('espnet2' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
