"""espnet2.bin.lm_train as an espnet-omni command.

Accepts exactly the arguments of ``python -m espnet2.bin.lm_train``. Run through espnet-omni,
ESPnet's import of ``g2p_en`` makes no NLTK download (:mod:`espnet_omni.lazy_g2p_en`), and
``--use_matplotlib`` / ``--use_tensorboard`` default to whether matplotlib and tensorboard are
installed (:mod:`espnet_omni.training_logs`).
"""

from typing import List, Optional

import espnet_omni  # noqa: F401  (before ESPnet: the g2p_en import hook)
from espnet2.tasks.lm import LMTask
from espnet_omni.launch import run
from espnet_omni.training_logs import train


def main(cmd: Optional[List[str]] = None) -> None:
    run(lambda args: train(LMTask, args), cmd)


if __name__ == "__main__":
    main()
