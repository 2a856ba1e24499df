"""Write an ablation's training configs: each changed model's config with the ablation's options.

    python -m espnet_omni.bin.make_ablation_configs --ablation conf/ablation/jitter.yaml \\
        --configs conf/train_asr_switch.yaml conf/train_asr_omni_router.yaml ... \\
        --output_dir study/jitter/conf [--only omni_router]

A config's model is its file name without ``train_asr_`` and ``.yaml``; ``--only`` keeps those
of the ablation's models. Prints the models to train, space separated (run_study.sh trains those
and takes the others from the baseline).
"""

import argparse
import contextlib
import sys
from pathlib import Path


def model_of(config: Path) -> str:
    return config.stem[len("train_asr_"):] if config.stem.startswith("train_asr_") else config.stem


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ablation", type=Path, required=True)
    parser.add_argument("--configs", type=Path, nargs="+", required=True,
                        help="the recipe's training configs, one per model")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--only", nargs="+", default=None,
                        help="train only these of the ablation's models")
    args = parser.parse_args(cmd)

    config_of = {model_of(c): c for c in args.configs}
    # stdout carries the models alone: what ESPnet's imports print goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        from espnet_omni.recipe.ablation import AblationError, only_models, read_ablation, write_ablation_configs

        try:
            ablation = read_ablation(args.ablation, list(config_of))
            if args.only:
                ablation = only_models(ablation, args.only)
            write_ablation_configs(ablation, config_of, args.output_dir)
        except AblationError as err:
            sys.exit(f"ERROR: {err}")
    print(" ".join(ablation.models))


if __name__ == "__main__":
    main()
