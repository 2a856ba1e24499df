"""Validate Kaldi-style data dirs: sorted, consistent ids, readable audio, non-empty text.

    python -m espnet_omni.bin.validate_data_dir data/train data/dev [--no_audio_check]

Exits non-zero with the file and line of the first problem found in each dir.
"""

import argparse
import sys
from pathlib import Path

from espnet_omni.recipe.data_dir import DataDirError, iter_durations


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dirs", nargs="+", type=Path)
    parser.add_argument("--no_audio_check", action="store_true", help="skip reading audio headers")
    args = parser.parse_args(cmd)
    failed = False
    for data_dir in args.data_dirs:
        utterances, seconds = 0, 0.0
        try:  # streamed: a corpus of millions of utterances is never held in memory
            for _, duration in iter_durations(data_dir, check_audio=not args.no_audio_check):
                utterances += 1
                seconds += duration
        except DataDirError as err:
            print(f"ERROR: {err}", file=sys.stderr)
            failed = True
            continue
        print(f"{data_dir}: ok" + (f", {utterances} utterances, {seconds / 3600:.2f} h" if utterances else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
