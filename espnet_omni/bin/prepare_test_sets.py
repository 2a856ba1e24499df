"""Prepare benchmark test sets from the corpora's official distributions as Kaldi data dirs.

    python -m espnet_omni.bin.prepare_test_sets --data_dir data \\
        --db LIBRISPEECH=/corpora --db EVAL2000="/ldc/LDC2002S09/hub5e_00 /ldc/LDC2002T43" \\
        librispeech_test_clean swbd_eval2000 ...

Each ``--db VAR=folder(s)`` is a ``db.sh`` variable. A set whose corpus is missing or malformed
is skipped with the path and file expected; the others are still prepared, and a summary lists
every set. Exits 1 when no set could be prepared. A set whose inputs have not changed since it
was prepared is left as it is (``--force`` prepares it again).
"""

import argparse
import logging
import os
import sys
from pathlib import Path

from espnet_omni.corpora.test_sets import TEST_SETS, prepare_test_sets


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test_sets", nargs="+", choices=list(TEST_SETS), metavar="TEST_SET",
                        help=f"any of: {' '.join(TEST_SETS)}")
    parser.add_argument("--data_dir", type=Path, default=Path("data"))
    parser.add_argument("--db", action="append", default=[], metavar="VAR=PATH",
                        help="a db.sh variable (repeatable)")
    parser.add_argument("--force", action="store_true", help="prepare again even if up to date")
    args = parser.parse_args(cmd)
    db = {}
    for item in args.db:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--db {item}: expected VAR=PATH")
        db[name] = value
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")  # lhotse's progress bars would fill the logs
    outcomes = prepare_test_sets(args.test_sets, db, args.data_dir, args.force)
    print("Test sets:")
    for o in outcomes:
        print(f"  {o.name}: {o.status}" + (f" ({o.detail})" if o.status == "skipped" else ""))
    if all(o.status == "skipped" for o in outcomes):
        sys.exit("ERROR: no test set could be prepared; set the corpus folders in db.sh")


if __name__ == "__main__":
    main()
