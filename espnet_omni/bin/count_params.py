"""Print the total and active parameter counts of ESPnet ASR configs.

    python -m espnet_omni.bin.count_params conf/libriheavy/*.yaml --vocab_size 5000

The model is built by ``ASRTask.build_model`` exactly as training builds it (on the meta
device, so that large configs cost no memory). ``--check`` compares the counts with the
``# params: total N active M`` line of each config and fails on a mismatch; ``--update``
rewrites that line.
"""

import argparse
import sys
from pathlib import Path

from espnet_omni.analysis.params import parameter_counts
from espnet_omni.configs import (
    build_model_from_config,
    count_mismatch,
    documented_counts,
    update_documented_counts,
)


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
            update_documented_counts(config, counts)
        elif args.check:
            mismatch = count_mismatch(config, counts)
            if mismatch:
                failed.append(mismatch)
    if failed:
        sys.exit("\n".join(failed))


if __name__ == "__main__":
    main()
