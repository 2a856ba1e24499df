"""Print the total and active parameter counts of ESPnet ASR configs.

    python -m espnet_omni.bin.count_params conf/libriheavy/*.yaml --vocab_size 5000

The model is built by ``ASRTask.build_model`` exactly as training builds it (on the meta
device, so that large configs cost no memory). ``--check`` compares the counts with the
``# params: total N active M`` line of each config and fails on a mismatch; ``--update``
rewrites that line.
"""

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, Optional

import torch

import espnet_omni  # noqa: F401  (registers the classes)
from espnet2.tasks.asr import ASRTask
from espnet_omni.analysis.params import parameter_counts

DOCUMENTED = re.compile(r"^#\s*params:\s*total\s+([\d,]+)\s+active\s+([\d,]+)", re.M)
DOCUMENTED_VOCAB = re.compile(r"\(vocab (\d+)\)")


def build_model_from_config(config: Path, vocab_size: int, device: str = "meta") -> torch.nn.Module:
    """Build the ASR model of a training YAML with a placeholder token list of ``vocab_size``."""
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


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument(
        "--vocab_size", type=int, default=None,
        help="output units; default: the '(vocab V)' stated in each config",
    )
    parser.add_argument("--check", action="store_true", help="verify the documented counts")
    parser.add_argument("--update", action="store_true", help="rewrite the documented counts")
    args = parser.parse_args(cmd)

    failed = []
    print("| config | encoder | vocab | total | active | experts |")
    print("| --- | --- | --- | --- | --- | --- |")
    for config in args.configs:
        documented = documented_counts(config)
        vocab = args.vocab_size or (documented or {}).get("vocab_size")
        if vocab is None:
            sys.exit(f"{config}: no '(vocab V)' in its header; pass --vocab_size")
        model = build_model_from_config(config, vocab)
        counts = parameter_counts(model)
        name = type(model.encoder).__name__
        print(
            f"| {config} | {name} | {vocab} | {counts['total']:,} | {counts['active']:,} "
            f"| {counts['experts']:,} |"
        )
        if args.update:
            line = f"# params: total {counts['total']:,} active {counts['active']:,}"
            config.write_text(DOCUMENTED.sub(line, config.read_text(), count=1))
        elif args.check:
            if documented is None:
                failed.append(f"{config}: no '# params: total N active M' line")
            elif (documented["total"], documented["active"]) != (counts["total"], counts["active"]):
                failed.append(
                    f"{config}: documents total {documented['total']:,} active "
                    f"{documented['active']:,}, the built model has total {counts['total']:,} "
                    f"active {counts['active']:,}"
                )
    if failed:
        sys.exit("\n".join(failed))


if __name__ == "__main__":
    main()
