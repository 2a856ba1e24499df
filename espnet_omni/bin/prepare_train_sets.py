"""Prepare the training and dev sets (LibriSpeech 960 h, Libriheavy) as Kaldi data dirs.

    python -m espnet_omni.bin.prepare_train_sets --data_dir data \\
        --db LIBRISPEECH=/corpora --db LIBRIHEAVY=/corpora/libriheavy --db LIBRILIGHT=/corpora/librilight \\
        librispeech_train_960 librispeech_dev libriheavy_large libriheavy_dev

Each ``--db VAR=folder`` is a ``db.sh`` variable. No audio is copied: wav.scp names the corpus's
files, and Libriheavy's dirs have a ``segments`` file (read by ESPnet as
``<dir>/segments,speech,kaldi_segments``). A set whose corpus is missing or malformed is skipped
with the path or file:line; the others are still prepared. Exits 1 when no set could be
prepared. A set whose metadata has not changed since it was prepared is left as it is
(``--force`` prepares it again).
"""

from typing import List, Optional

from espnet_omni.bin._prepare_sets import main_for
from espnet_omni.corpora.train_sets import TRAIN_SETS, prepare_train_sets


def main(cmd: Optional[List[str]] = None) -> None:
    main_for(__doc__.splitlines()[0], list(TRAIN_SETS), prepare_train_sets, "Training sets", cmd)


if __name__ == "__main__":
    main()
