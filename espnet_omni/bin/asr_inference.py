"""espnet2.bin.asr_inference with espnet-omni's encoders and model registered.

Accepts exactly the arguments of ``python -m espnet2.bin.asr_inference``.
"""

from typing import List, Optional

import espnet_omni  # noqa: F401  (registers the classes)
from espnet2.bin.asr_inference import main as espnet_main
from espnet_omni.launch import run


def main(cmd: Optional[List[str]] = None) -> None:
    run(espnet_main, cmd)


if __name__ == "__main__":
    main()
