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

    from espnet_omni.recipe.study import make_study_report

    try:
        report = make_study_report(args.study_dir, args.seeds, args.models, args.sets, args.in_domain,
                                   args.focus, args.primary, args.resamples, args.baseline_dir)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"ERROR: {err}")
    print(report)


if __name__ == "__main__":
    main()
