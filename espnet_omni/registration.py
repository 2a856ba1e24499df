"""Register espnet-omni's classes into ESPnet's ASR class choices.

ESPnet's ``ClassChoices`` has no plugin hook: its ``classes`` dict is read when
``ASRTask.get_parser()`` builds the argparse choices and when a stored config is turned into
a model. Registration must therefore happen before either, in every process that builds a
model (training, collect_stats, inference, ``Speech2Text``, the model zoo); ``import
espnet_omni`` does it.
"""

from typing import Dict, Type

from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.train.abs_espnet_model import AbsESPnetModel

from espnet_omni.encoder import DenseTransformerEncoder, OmniRouterEncoder, SwitchEncoder
from espnet_omni.model import MoEESPnetASRModel

ENCODERS: Dict[str, Type[AbsEncoder]] = {
    "omni_router": OmniRouterEncoder,
    "switch": SwitchEncoder,
    "dense_transformer": DenseTransformerEncoder,
}
MODELS: Dict[str, Type[AbsESPnetModel]] = {"moe_espnet": MoEESPnetASRModel}


def _add(choices, name: str, cls: type, base: type) -> None:
    # Inserting after ClassChoices.__init__ skips its own type check: do it here.
    if not issubclass(cls, base):
        raise TypeError(f"{cls.__name__} registered as {choices.name} '{name}' is not a {base.__name__}")
    present = choices.classes.get(name)
    if present is not None and present is not cls:
        raise RuntimeError(
            f"{choices.name} '{name}' is already registered to {present.__module__}."
            f"{present.__name__}; espnet-omni cannot register {cls.__name__} under that name"
        )
    choices.classes[name] = cls


def register() -> None:
    """Add the encoders and the model to ``espnet2.tasks.asr``'s choices (idempotent)."""
    from espnet2.tasks import asr

    for name, cls in ENCODERS.items():
        _add(asr.encoder_choices, name, cls, AbsEncoder)
    for name, cls in MODELS.items():
        _add(asr.model_choices, name, cls, AbsESPnetModel)
