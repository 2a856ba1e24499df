"""espnet-omni: Omni-router / Switch Mixture-of-Experts encoders for ESPnet.

Importing the package registers the encoders ``omni_router``, ``switch`` and
``dense_transformer`` and the model ``moe_espnet`` into ESPnet's ASR task (at once if
``espnet2.tasks.asr`` is imported, otherwise as soon as it is), so that an ESPnet YAML can
select them.
"""

from espnet_omni.version import __version__  # noqa: F401
from espnet_omni.registration import register_when_asr_task_imported

register_when_asr_task_imported()
