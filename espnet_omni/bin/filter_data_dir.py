"""Copy a data dir keeping utterances whose duration lies in [min, max] seconds.

    python -m espnet_omni.bin.filter_data_dir --min_seconds 0.3 --max_seconds 20 data/train dump/raw/train \
        [--fs 16000] [--max_bad_audio N] [--check_audio header|full]

Utterances whose audio cannot be read (missing, empty, corrupt, truncated, zero-length) are left
out, listed in <dst>/bad_audio.txt, while there are at most --max_bad_audio such files; with more,
the command fails and lists them in <dst>.bad_audio.txt. Every other problem is an error. The
destination is replaced only once the new copy is complete: on failure it is left as it was.
--check_audio full decodes every file, which also finds damage inside a compressed file whose
header and end are intact, at the cost of reading the whole corpus.
"""

import argparse
import sys
from pathlib import Path

from espnet_omni.recipe.audio_check import add_audio_arguments
from espnet_omni.recipe.data_dir import DataDirError, Report, filter_by_duration


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--min_seconds", type=float, default=0.1)
    parser.add_argument("--max_seconds", type=float, default=30.0)
    add_audio_arguments(parser, "unreadable audio files left out (listed in <dst>/bad_audio.txt); more fail")
    args = parser.parse_args(cmd)
    report = Report()
    try:
        kept, dropped = filter_by_duration(args.src, args.dst, args.min_seconds, args.max_seconds, args.fs,
                                           args.max_bad_audio, args.check_audio, report)
    except DataDirError as err:
        sys.exit(f"ERROR: {err}")
    listing = args.dst / "bad_audio.txt"
    if report.bad_audio:
        print(f"WARNING: {report.bad_audio_text(args.src, args.max_bad_audio, listing)}", file=sys.stderr)
    print(f"{args.dst}: kept {kept} utterances, dropped {dropped} outside "
          f"[{args.min_seconds}, {args.max_seconds}] s"
          + (f" and those of {report.bad_audio} unreadable audio files ({listing})" if report.bad_audio else ""))


if __name__ == "__main__":
    main()
