"""espnet2.bin.asr_train with espnet-omni's encoders and model registered.

Accepts exactly the arguments of ``python -m espnet2.bin.asr_train`` (training and
``--collect_stats true``). Multi-process CPU or multi-node training::

    python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        -m espnet_omni.bin.asr_train ... --ngpu 0 --multiprocessing_distributed false \\
        --dist_backend gloo

``--use_matplotlib`` and ``--use_tensorboard`` default to whether matplotlib and tensorboard
are installed (see :mod:`espnet_omni.training_logs`).
"""

from typing import List, Optional

import espnet_omni  # noqa: F401  (registers the classes)
from espnet2.tasks.asr import ASRTask
from espnet_omni.launch import run
from espnet_omni.training_logs import train


def main(cmd: Optional[List[str]] = None) -> None:
    run(lambda args: train(ASRTask, args), cmd)


if __name__ == "__main__":
    main()
