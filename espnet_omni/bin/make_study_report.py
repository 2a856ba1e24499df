"""Write a study's REPORT.md and learning curves from its seeds' runs (run_study.sh).

    python -m espnet_omni.bin.make_study_report --study_dir study --seeds 0 1 2 \\
        [--sets test_clean test_accent ... --in_domain test_clean] [--focus omni_router] \\
        [--models dense_transformer switch omni_router] [--primary decode_ctc_lm_lm_rnn_valid.cer_ctc.ave] \\
        [--baseline_dir study]   # for an ablation in study/<name>

Reads ``<study_dir>/seed<N>/`` (training statistics, scores of every decoding, routing.json) and
writes ``<study_dir>/REPORT.md``, ``<study_dir>/learning_curves.png`` and, for each seed read
there, ``<study_dir>/summaries/seed<N>.json.gz``: what the report read of the seed, from which the
report is made again when ``seed<N>/`` is gone. The test sets and the in-domain ones default to
the columns of the first seed's RESULTS.md (or those of its summary). With ``--baseline_dir``
(an ablation), a model missing from a seed's folder is the baseline's of that seed (from the
baseline's folders or summaries), and the report starts with each changed model against the
baseline's.
"""

import argparse
import sys
from pathlib import Path


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study_dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--sets", nargs="+", default=None)
    parser.add_argument("--in_domain", nargs="*", default=None)
    parser.add_argument("--models", nargs="+", default=["dense_transformer", "switch", "omni_router"])
    parser.add_argument("--focus", default="omni_router")
    parser.add_argument("--primary", default=None,
                        help="the decoding of the paired differences (default: the first with an LM and "
                             "the averaged model, else the first)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--baseline_dir", type=Path, default=None,
                        help="the baseline study's folder, when --study_dir is an ablation")
    args = parser.parse_args(cmd)

    from espnet_omni.recipe.results import read_results_table
    from espnet_omni.recipe.study import (complete_decodes, draw_learning_curves, read_seed_summary, read_study,
                                          study_report, summary_path, write_seed_summary)
    from espnet_omni.whole_file import write_text_whole

    if args.sets is None or args.in_domain is None:
        results_md = args.study_dir / f"seed{args.seeds[0]}" / "RESULTS.md"
        summary = summary_path(args.study_dir, args.seeds[0])
        if results_md.exists():
            cols, _ = read_results_table(results_md.read_text())
            sets, in_domain = [c.set_id for c in cols], [c.set_id for c in cols if c.in_domain]
        elif summary.exists():
            try:
                _, sets, in_domain = read_seed_summary(summary)
            except ValueError as err:
                sys.exit(f"ERROR: {err}")
        else:
            sys.exit(f"ERROR: {results_md}: missing (and {summary}); name the test sets with --sets and --in_domain")
        args.sets = args.sets or sets
        args.in_domain = args.in_domain if args.in_domain is not None else in_domain
    try:
        runs, baseline_runs, from_folders = read_study(args.study_dir, args.seeds, args.models, args.sets,
                                                       args.baseline_dir)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"ERROR: {err}")
    decodes = complete_decodes(runs + (baseline_runs or []), args.models)
    if not decodes:
        sys.exit(f"ERROR: no decoding of {args.sets} is scored for every model in every seed of "
                 f"{args.study_dir} (run run_study.sh to the end first)")
    primary = args.primary or next((d for d in decodes if "_lm_" in d and d.endswith(".ave")), decodes[0])
    if primary not in decodes:
        sys.exit(f"ERROR: --primary {primary}: not scored for every model and seed (have: {decodes})")
    curves = draw_learning_curves(runs, args.models, args.study_dir / "learning_curves.png")
    title = f"The ablation {args.study_dir.name}" if args.baseline_dir else None
    report = study_report(runs, args.models, args.sets, args.in_domain, args.focus, primary,
                          curves.name, args.resamples, baseline_runs, title)
    write_text_whole(args.study_dir / "REPORT.md", report)
    for run in runs:
        if run.seed in from_folders:
            write_seed_summary(summary_path(args.study_dir, run.seed), run, args.sets, args.in_domain)
    print(report)


if __name__ == "__main__":
    main()
