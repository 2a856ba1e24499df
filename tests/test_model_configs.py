"""Every config in conf/: YAML -> ASRTask.build_model -> forward/backward, ESPnet's dry-run
config check, and the parameter counts documented in its header."""


import pytest
import torch

import espnet_omni  # noqa: F401
from espnet2.bin import asr_train
from espnet_omni.analysis.params import parameter_counts
from espnet_omni.configs import build_model_from_config, documented_counts
from espnet_omni.launch import run
from espnet_omni.model import MoEESPnetASRModel

from conftest import CONF

CONFIGS = sorted(CONF.glob("*/*.yaml"))
IDS = [str(c.relative_to(CONF)) for c in CONFIGS]


def test_conf_has_the_three_variants_at_each_size():
    sizes = {c.parent.name for c in CONFIGS}
    assert sizes == {"tiny", "libriheavy", "speechcrawl"}
    for size in sizes:
        assert {c.stem for c in CONFIGS if c.parent.name == size} == {
            "omni_router", "switch", "dense_transformer"
        }


@pytest.mark.timeout(300)
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_build_forward_backward_and_documented_counts(config):
    documented = documented_counts(config)
    assert documented is not None, f"{config} has no '# params: total N active M (vocab V)'"
    torch.manual_seed(0)
    model = build_model_from_config(config, documented["vocab_size"], device="cpu")
    assert isinstance(model, MoEESPnetASRModel)
    counts = parameter_counts(model)
    assert (counts["total"], counts["active"]) == (documented["total"], documented["active"])

    model.train()
    speech = torch.randn(2, 8000)
    text = torch.randint(2, documented["vocab_size"] - 1, (2, 3))
    loss, stats, weight = model(speech, torch.tensor([8000, 6000]), text, torch.tensor([3, 2]))
    assert torch.isfinite(loss).all()
    moe = config.stem != "dense_transformer"
    assert ("loss_lb" in stats) == moe and ("loss_z" in stats) == moe
    loss.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_espnet_dry_run_config_check(config, tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\na\nb\n<sos/eos>\n")
    run(asr_train.main, [
        "--config", str(config), "--iterator_type", "none", "--dry_run", "true",
        "--output_dir", str(tmp_path / "out"), "--token_list", str(tokens),
    ])
    assert (tmp_path / "out" / "config.yaml").exists()
