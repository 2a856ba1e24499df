"""Prepare benchmark test sets from the corpora's official distributions as Kaldi data dirs.

    python -m espnet_omni.bin.prepare_test_sets --data_dir data \\
        --db LIBRISPEECH=/corpora --db EVAL2000="/ldc/LDC2002S09/hub5e_00 /ldc/LDC2002T43" \\
        librispeech_test_clean swbd_eval2000 ...

Each ``--db VAR=folder(s)`` is a ``db.sh`` variable. A set whose corpus is missing or malformed
is skipped with the path and file expected; the others are still prepared, and a summary lists
every set. Exits 1 when no set could be prepared. A set whose inputs have not changed since it
was prepared is left as it is (``--force`` prepares it again).
"""

from typing import List, Optional

from espnet_omni.bin._prepare_sets import main_for
from espnet_omni.corpora.test_sets import TEST_SETS, prepare_test_sets


def main(cmd: Optional[List[str]] = None) -> None:
    main_for(__doc__.splitlines()[0], list(TEST_SETS), prepare_test_sets, "Test sets", cmd)


if __name__ == "__main__":
    main()
