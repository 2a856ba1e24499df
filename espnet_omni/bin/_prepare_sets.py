"""The command line shared by prepare_test_sets and prepare_train_sets."""

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence


def main_for(description: str, set_names: Sequence[str], prepare: Callable, title: str,
             cmd: Optional[List[str]] = None) -> None:
    """Parse ``SET ... --data_dir D --db VAR=PATH ... [--force]``, call
    ``prepare(sets, db, data_dir, force)`` and print each set's outcome under ``title``.

    Exits 1 when no set could be prepared.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("sets", nargs="+", choices=list(set_names), metavar="SET",
                        help=f"any of: {' '.join(set_names)}")
    parser.add_argument("--data_dir", type=Path, default=Path("data"))
    parser.add_argument("--db", action="append", default=[], metavar="VAR=PATH",
                        help="a db.sh variable (repeatable)")
    parser.add_argument("--force", action="store_true", help="prepare again even if up to date")
    args = parser.parse_args(cmd)
    db: Dict[str, str] = {}
    for item in args.db:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--db {item}: expected VAR=PATH")
        db[name] = value
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")  # lhotse's progress bars would fill the logs
    outcomes = prepare(args.sets, db, args.data_dir, args.force)
    print(f"{title}:")
    for o in outcomes:
        print(f"  {o.name}: {o.status}" + (f" ({o.detail})" if o.status == "skipped" else ""))
    if all(o.status == "skipped" for o in outcomes):
        sys.exit(f"ERROR: no {title.lower()[:-1]} could be prepared; set the corpus folders in db.sh")
