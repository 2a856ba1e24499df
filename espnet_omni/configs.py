"""ESPnet ASR training configs: the model a YAML describes, and the parameter counts its
header documents (``# params: total N active M`` and ``(vocab V)``)."""

import re
from pathlib import Path
from typing import Dict, Optional

import torch

DOCUMENTED = re.compile(r"^#\s*params:\s*total\s+([\d,]+)\s+active\s+([\d,]+)", re.M)
DOCUMENTED_VOCAB = re.compile(r"\(vocab (\d+)\)")


def build_model_from_config(config: Path, vocab_size: int, device: str = "meta") -> torch.nn.Module:
    """Build the ASR model of a training YAML as ``ASRTask.build_model`` does in training,
    with a placeholder token list of ``vocab_size`` (on the meta device by default, so that
    large configs cost no memory)."""
    from espnet2.tasks.asr import ASRTask

    import espnet_omni  # noqa: F401  (registers the classes)

    parser = ASRTask.get_parser()
    args = parser.parse_args(["--config", str(config), "--token_list", "placeholder"])
    args.token_list = ["<blank>", "<unk>"] + [f"t{i}" for i in range(vocab_size - 3)] + ["<sos/eos>"]
    with torch.device(device):
        return ASRTask.build_model(args)


def documented_counts(config: Path) -> Optional[Dict[str, int]]:
    """The ``# params: total N active M`` line of a config, with its ``(vocab V)``."""
    text = config.read_text()
    match = DOCUMENTED.search(text)
    vocab = DOCUMENTED_VOCAB.search(text)
    if match is None or vocab is None:
        return None
    total, active = (int(g.replace(",", "")) for g in match.groups())
    return {"total": total, "active": active, "vocab_size": int(vocab.group(1))}


def count_mismatch(config: Path, counts: Dict[str, int]) -> Optional[str]:
    """Why the counts documented in ``config`` differ from ``counts``; None when they agree."""
    documented = documented_counts(config)
    if documented is None:
        return f"{config}: no '# params: total N active M' line"
    if (documented["total"], documented["active"]) != (counts["total"], counts["active"]):
        return (
            f"{config}: documents total {documented['total']:,} active {documented['active']:,}, "
            f"the built model has total {counts['total']:,} active {counts['active']:,}"
        )
    return None


def update_documented_counts(config: Path, counts: Dict[str, int]) -> None:
    """Rewrite the ``# params:`` line of ``config`` with ``counts``."""
    line = f"# params: total {counts['total']:,} active {counts['active']:,}"
    config.write_text(DOCUMENTED.sub(line, config.read_text(), count=1))
