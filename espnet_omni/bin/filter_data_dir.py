"""Copy a data dir keeping utterances whose duration lies in [min, max] seconds.

    python -m espnet_omni.bin.filter_data_dir --min_seconds 0.3 --max_seconds 20 data/train dump/raw/train

The destination is replaced only once the new copy is complete.
"""

import argparse
import sys
from pathlib import Path

from espnet_omni.recipe.data_dir import DataDirError, filter_by_duration


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--min_seconds", type=float, default=0.1)
    parser.add_argument("--max_seconds", type=float, default=30.0)
    args = parser.parse_args(cmd)
    try:
        kept, dropped = filter_by_duration(args.src, args.dst, args.min_seconds, args.max_seconds)
    except DataDirError as err:
        sys.exit(f"ERROR: {err}")
    print(f"{args.dst}: kept {kept} utterances, dropped {dropped} outside "
          f"[{args.min_seconds}, {args.max_seconds}] s")


if __name__ == "__main__":
    main()
