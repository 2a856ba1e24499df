"""Unpack a packed ASR model into an experiment folder for the recipe's decoding stage.

    python -m espnet_omni.bin.unpack_model --model exp/asr_omni_router/asr_omni_router.zip \\
        --exp_dir exp/download/asr_omni_router [--model_file packed.pth]

``--model`` is a zip made by ``espnet2.bin.pack`` (the recipe's stage 11), a URL, or a name
espnet_model_zoo resolves (Hugging Face ``user/repo``). Writes ``<exp_dir>/config.yaml``,
``<exp_dir>/<model_file>`` and, when the package has an LM, ``<exp_dir>/lm/``.
"""

import argparse
import sys
from pathlib import Path

from espnet_omni.recipe.packed_model import unpack_into


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="packed zip, URL or model-zoo name")
    parser.add_argument("--exp_dir", type=Path, required=True)
    parser.add_argument("--model_file", default="packed.pth", help="name of the model file's link")
    args = parser.parse_args(cmd)
    try:
        files = unpack_into(args.model, args.exp_dir, args.model_file)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"ERROR: {err}")
    print(f"{args.model} -> {args.exp_dir} ({', '.join(sorted(files))})")


if __name__ == "__main__":
    main()
