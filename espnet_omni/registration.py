"""Register espnet-omni's classes into ESPnet's ASR class choices.

ESPnet's ``ClassChoices`` has no plugin hook: its ``classes`` dict is read when
``ASRTask.get_parser()`` builds the argparse choices and when a stored config is turned into
a model. Registration must therefore happen before either, in every process that builds a
model (training, collect_stats, inference, ``Speech2Text``, the model zoo).

``import espnet_omni`` calls :func:`register_when_asr_task_imported`: it registers at once if
``espnet2.tasks.asr`` is already imported, and otherwise right after that module is first
imported. Every way of building an ESPnet ASR model imports it first, and tools that never
build one (corpus generation, scoring) do not pay ESPnet's import time.

Likewise the data type ``kaldi_segments`` (:mod:`espnet_omni.data.kaldi_segments`) is added to
``espnet2.train.dataset.DATA_TYPES`` once that module is imported, before any dataset is built,
and espnet_model_zoo's cache of local zips is made to follow the zip (:mod:`espnet_omni.model_zoo`)
once ``espnet_model_zoo.downloader`` is imported.
"""

import importlib.abc
import importlib.util
import sys
import threading

ASR_TASK_MODULE = "espnet2.tasks.asr"
DATASET_MODULE = "espnet2.train.dataset"
MODEL_ZOO_MODULE = "espnet_model_zoo.downloader"

ENCODER_NAMES = {
    "omni_router": "OmniRouterEncoder",
    "switch": "SwitchEncoder",
    "dense_transformer": "DenseTransformerEncoder",
}
MODEL_NAMES = {"moe_espnet": "MoEESPnetASRModel"}


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
    from espnet2.asr.encoder.abs_encoder import AbsEncoder
    from espnet2.tasks import asr
    from espnet2.train.abs_espnet_model import AbsESPnetModel

    from espnet_omni import encoder, model

    for name, cls_name in ENCODER_NAMES.items():
        _add(asr.encoder_choices, name, getattr(encoder, cls_name), AbsEncoder)
    for name, cls_name in MODEL_NAMES.items():
        _add(asr.model_choices, name, getattr(model, cls_name), AbsESPnetModel)


def register_data_types() -> None:
    """Add ``kaldi_segments`` to ``espnet2.train.dataset.DATA_TYPES`` (idempotent)."""
    from espnet2.train import dataset

    from espnet_omni.data import kaldi_segments

    present = dataset.DATA_TYPES.get(kaldi_segments.NAME)
    if present is not None and present["func"] is not kaldi_segments.DATA_TYPE["func"]:
        raise RuntimeError(
            f"ESPnet data type '{kaldi_segments.NAME}' is already registered to {present['func']}; "
            "espnet-omni cannot register its segments reader under that name"
        )
    dataset.DATA_TYPES[kaldi_segments.NAME] = kaldi_segments.DATA_TYPE


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds ``module`` with the other finders and calls ``callback`` once it has executed."""

    def __init__(self, module: str = ASR_TASK_MODULE, callback=None):
        self._lock = threading.Lock()
        self.module = module
        self.callback = callback or register

    def find_spec(self, fullname, path, target=None):
        if fullname != self.module:
            return None
        with self._lock:
            if self not in sys.meta_path:
                return None
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            self.callback()

        spec.loader.exec_module = exec_then_register
        return spec


def patch_model_zoo() -> None:
    """Make espnet_model_zoo unpack a local zip again when it changes (idempotent)."""
    from espnet_omni import model_zoo

    model_zoo.install()


def register_when_asr_task_imported() -> None:
    """Register now if ESPnet's ASR task (its dataset module, the model zoo's downloader) is
    imported, else right after its first import."""
    for module, callback in ((DATASET_MODULE, register_data_types), (ASR_TASK_MODULE, register),
                             (MODEL_ZOO_MODULE, patch_model_zoo)):
        if module in sys.modules:
            callback()
        elif not any(isinstance(f, _RegisterAfterImport) and f.module == module for f in sys.meta_path):
            sys.meta_path.insert(0, _RegisterAfterImport(module, callback))
