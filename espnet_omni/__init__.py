"""espnet-omni: Omni-router / Switch Mixture-of-Experts encoders for ESPnet.

Importing the package registers the encoders ``omni_router``, ``switch`` and
``dense_transformer`` and the model ``moe_espnet`` into ESPnet's ASR task, so that an ESPnet
YAML can select them.
"""

from espnet_omni.version import __version__  # noqa: F401
from espnet_omni.registration import register

register()
