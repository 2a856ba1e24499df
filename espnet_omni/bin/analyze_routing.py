"""Analyse the routing of trained MoE models over data dirs: routing.json and pictures.

    python -m espnet_omni.bin.analyze_routing \\
        --model exp/asr_switch --model exp/asr_omni_router [--model_file valid.cer_ctc.ave.pth] \\
        --data_dir data/dev --data_dir data/test_noise ... \\
        [--reference_dir data/train --reference_max_utts 500] \\
        [--noise_pair data/dev data/dev_noisy] [--max_utts 1000] \\
        --output_dir exp/routing [--results exp/RESULTS.md] [--batch_size 16] [--ngpu 0]

A model is an experiment folder (``config.yaml`` and a model file: ``--model_file``, else the
first of valid.cer_ctc.ave.pth, valid.cer_ctc.best.pth, ...) or a packed model (a zip made by
``espnet2.bin.pack``, a URL or a model-zoo name). A data dir is ``path`` or ``name=path``. Each
model runs once over every utterance, in batches as decoding runs; only counts are kept.

Writes ``<output_dir>/routing.json`` (what it holds: docs/routing.md) and the pictures
``routing_agreement.png`` (the models' layer-by-layer agreement side by side),
``routing_load.png``, ``routing_usage.png``, ``routing_blank.png`` and
``routing_path_<model>.png`` (an example utterance's experts over time). With ``--results``,
the "Routing" section of that RESULTS.md is written (replaced when there is one).
"""

import argparse
import logging
import sys
from pathlib import Path

from espnet2.utils.types import str2bool

from espnet_omni.extras import MissingExtraError, require_extra


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True,
                        help="experiment folder, packed zip, URL or model-zoo name (repeat for several)")
    parser.add_argument("--model_file", default=None,
                        help="model file of the experiment folders (default: the first found of "
                             "valid.cer_ctc.ave.pth, valid.cer_ctc.best.pth, ...)")
    parser.add_argument("--data_dir", action="append", required=True,
                        help="data dir to analyse, path or name=path (repeat for several)")
    parser.add_argument("--reference_dir", default=None,
                        help="data dir whose expert usage each set's is compared with, e.g. the "
                             "training set (default: the pooled usage of the data dirs)")
    parser.add_argument("--noise_pair", nargs=2, action="append", default=[], metavar=("CLEAN", "NOISY"),
                        help="two data dirs holding the same utterances (same ids) clean and noisy")
    parser.add_argument("--max_utts", type=int, default=None,
                        help="analyse a random subset of at most this many utterances per data dir")
    parser.add_argument("--reference_max_utts", type=int, default=1000,
                        help="utterances drawn from the reference dir")
    parser.add_argument("--example_utt", default=None,
                        help="utterance drawn in routing_path_<model>.png (default: the first)")
    parser.add_argument("--max_paths", type=int, default=200_000,
                        help="distinct expert paths counted one by one (bounds memory)")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=None,
                        help="RESULTS.md whose Routing section is written")
    parser.add_argument("--plots", type=str2bool, default=True, help="draw the pictures")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--ngpu", type=int, default=0)
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--log_level", default="INFO")
    args = parser.parse_args(cmd)
    for name in ("max_utts", "reference_max_utts", "max_paths", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")

    from espnet_omni.analysis.routing_capture import RoutingAnalysisError, analyze, report_json
    from espnet_omni.recipe.data_dir import DataDirError
    from espnet_omni.recipe.packed_model import ModelSourceError

    try:
        if args.plots:  # before the models run, not after
            require_extra("matplotlib", "Routing pictures (--plots true)")
        report = analyze(
            args.model, args.data_dir, args.reference_dir, [tuple(p) for p in args.noise_pair],
            model_file=args.model_file, max_utts=args.max_utts,
            reference_max_utts=args.reference_max_utts, batch_size=args.batch_size,
            device="cuda" if args.ngpu > 0 else "cpu", num_workers=args.num_workers,
            max_paths=args.max_paths, example_utt=args.example_utt,
        )
    except (RoutingAnalysisError, ModelSourceError, DataDirError, MissingExtraError) as err:
        sys.exit(f"ERROR: {err}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    output = args.output_dir / "routing.json"
    output.write_text(report_json(report))
    pictures = []
    if args.plots:
        from espnet_omni.analysis.routing_plots import write_pictures

        pictures = write_pictures(report, args.output_dir)
    if args.results is not None:
        from espnet_omni.recipe.results import replace_section, routing_markdown
        from espnet_omni.whole_file import write_text_whole

        section = routing_markdown(report, pictures, args.results.parent, output)
        write_text_whole(args.results, replace_section(
            args.results.read_text() if args.results.exists() else "", "Routing", section
        ))
    logging.info(f"wrote {output} and {len(pictures)} pictures")
    for name, skipped in report["skipped"].items():
        logging.info(f"{name}: skipped ({skipped})")


if __name__ == "__main__":
    main()
