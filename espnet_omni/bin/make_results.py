"""Write RESULTS.md: WER per test set per model, macro averages, relative reductions with
paired-bootstrap 95% confidence intervals.

    python -m espnet_omni.bin.make_results --exp_dirs exp/asr_dense_transformer exp/asr_switch \\
        exp/asr_omni_router --decode_name decode_asr --sets test_clean test_noise ... \\
        --in_domain test_clean --focus omni_router --output RESULTS.md

A model's name is its experiment folder's name without the ``asr_`` prefix. Scores are read
from ``<exp>/<decode_name>/<set>/score_wer/utt_errors.tsv``.
"""

import argparse
import datetime
import platform
import sys
from importlib.metadata import version
from pathlib import Path

from espnet_omni.recipe.results import results_markdown
from espnet_omni.recipe.scoring import read_utt_errors
from espnet_omni.whole_file import write_text_whole


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp_dirs", type=Path, nargs="+", required=True)
    parser.add_argument("--decode_name", required=True)
    parser.add_argument("--sets", nargs="+", required=True)
    parser.add_argument("--in_domain", nargs="*", default=[])
    parser.add_argument("--focus", default="omni_router", help="model whose reductions are reported")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--title", default="Results")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(cmd)

    errors, models = {}, []
    for exp in args.exp_dirs:
        model = exp.name[4:] if exp.name.startswith("asr_") else exp.name
        models.append(model)
        errors[model] = {}
        for test_set in args.sets:
            path = exp / args.decode_name / test_set / "score_wer" / "utt_errors.tsv"
            if not path.exists():
                sys.exit(f"ERROR: {path}: missing (run the scoring stage first)")
            errors[model][test_set] = read_utt_errors(path)
    scorer = (args.exp_dirs[0] / args.decode_name / args.sets[0] / "score_wer" / "result.txt").read_text().splitlines()[0]
    header = "\n".join([
        f"# {args.title}",
        "",
        f"- date: {datetime.date.today().isoformat()}; python {platform.python_version()}; "
        f"espnet {version('espnet')}; torch {version('torch')}; espnet-omni {version('espnet-omni')}",
        f"- WER (%) after Whisper's EnglishTextNormalizer on reference and hypothesis (Hub5'00 sets: "
        f"after its GLM); {scorer}",
        f"- decoding: {args.decode_name}",
        "",
    ])
    focus = args.focus if args.focus in models else None
    table = results_markdown(errors, models, args.sets, args.in_domain, focus, args.resamples, header)
    write_text_whole(args.output, table)
    print(table)


if __name__ == "__main__":
    main()
