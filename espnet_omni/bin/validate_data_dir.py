"""Validate Kaldi-style data dirs, reporting every problem found in one run.

Checked: UTF-8 tables, sorted and consistent ids, non-empty text, and audio that decodes, mono at
the recipe's sample rate.

    python -m espnet_omni.bin.validate_data_dir data/train data/dev [--fs 16000] [--max_bad_audio N]

Problems are printed as ``<file>:<line>: <what>`` (the first 20 of each file, the others
counted), and the exit status is non-zero when one is an error. Audio
that cannot be read (missing, empty, corrupt, truncated, zero-length) is a warning while there are
at most --max_bad_audio such files in a dir: filter_data_dir leaves their utterances out.
"""

import argparse
import sys
from pathlib import Path

from espnet_omni.recipe.audio_check import add_audio_arguments
from espnet_omni.recipe.data_dir import DataDirError, Report, iter_durations


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dirs", nargs="+", type=Path)
    add_audio_arguments(parser, "unreadable audio files tolerated per dir (warnings; filter_data_dir leaves them out)")
    parser.add_argument("--no_audio_check", action="store_true", help="check the tables only")
    args = parser.parse_args(cmd)
    check = "none" if args.no_audio_check else args.check_audio
    failed = False
    for data_dir in args.data_dirs:
        report = Report()
        utterances, seconds = 0, 0.0
        try:  # streamed: a corpus of millions of utterances is never held in memory
            for _, duration in iter_durations(data_dir, check, args.fs, args.max_bad_audio, report):
                utterances += 1
                seconds += duration
        except DataDirError as err:
            print(f"ERROR: {err}", file=sys.stderr)
            failed = True
            continue
        if report.bad_audio:
            print(f"WARNING: {report.bad_audio_text(data_dir, args.max_bad_audio)}", file=sys.stderr)
        print(f"{data_dir}: ok" + (f", {utterances} utterances, {seconds / 3600:.2f} h" if utterances else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
