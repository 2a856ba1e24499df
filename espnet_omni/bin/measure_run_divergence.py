"""Measure how far trainings of the same configs drift apart when only threads, CPU kernels or
the seed differ (what makes two runs of the recipe give different tables).

    python -m espnet_omni.bin.measure_run_divergence \\
        --configs egs2/omni_asr/asr1/conf/train_asr_{dense_transformer,switch,omni_router}.yaml \\
        [--steps 30] [--settings "reference again" "2 threads" ...] [--work_dir DIR] [--output run_divergence.md]

Each setting is a fresh process replaying the config's training on fixed random batches
(espnet_omni.analysis.run_divergence); prints a markdown table (and writes it with its json
beside it with --output).
"""

import argparse
import sys
import tempfile
from pathlib import Path


def main(cmd=None) -> None:
    from espnet_omni.analysis.run_divergence import SETTINGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=Path, nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--settings", nargs="+", default=[s for s in SETTINGS if s != "reference"],
                        choices=[s for s in SETTINGS if s != "reference"])
    parser.add_argument("--work_dir", type=Path, default=None, help="where the runs are saved (default: a temporary folder)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(cmd)
    missing = [str(c) for c in args.configs if not c.is_file()]
    if missing:
        sys.exit(f"ERROR: no such config: {', '.join(missing)}")
    if args.steps < 1:
        parser.error("--steps must be positive")

    from espnet_omni.analysis.run_divergence import divergence_json, divergence_markdown, measure

    with tempfile.TemporaryDirectory() as tmp:
        results = measure(args.configs, args.steps, args.work_dir or Path(tmp), ["reference", *args.settings])
    table = divergence_markdown(results, args.steps)
    print(table)
    if args.output:
        args.output.write_text(table)
        args.output.with_suffix(".json").write_text(divergence_json(results))


if __name__ == "__main__":
    main()
