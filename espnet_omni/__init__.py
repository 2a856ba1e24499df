"""espnet-omni: Omni-router / Switch Mixture-of-Experts encoders for ESPnet.

Importing the package registers the encoders ``omni_router``, ``switch`` and
``dense_transformer`` and the model ``moe_espnet`` into ESPnet's ASR task (at once if
``espnet2.tasks.asr`` is imported, otherwise as soon as it is), so that an ESPnet YAML can
select them. It also defers ESPnet's import of ``g2p_en`` to its first use, without NLTK
downloads (see :mod:`espnet_omni.lazy_g2p_en`): processes that import the package first open no
network connection.
"""

from espnet_omni.version import __version__  # noqa: F401
from espnet_omni import lazy_g2p_en
from espnet_omni.registration import register_when_asr_task_imported

lazy_g2p_en.install()
register_when_asr_task_imported()
