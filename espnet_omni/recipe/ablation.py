"""Ablations of the study (``run_study.sh --ablation FILE``): a YAML file naming the models it
changes and the training-config options it overrides.

::

    # Router jitter: multiplicative noise on the router's input during training.
    models: [switch, omni_router]        # the others are the baseline's, trained once
    config:
        encoder_conf:
            router_jitter: 0.01

``config`` is merged into each named model's training config (mappings key by key, any other
value replaced), so an ablation names only what it changes. ``models`` defaults to every model.
"""

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Sequence

import yaml

ABLATION_KEYS = ("models", "config")


class AblationError(ValueError):
    """An ablation file that cannot be applied; the message names the file."""


@dataclass
class Ablation:
    name: str  # the file's stem: the study folder's name
    path: Path
    models: List[str]
    config: Dict


def read_ablation(path: Path, all_models: Sequence[str]) -> Ablation:
    """The ablation in ``path``, checked against the recipe's ``all_models``."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as err:
        raise AblationError(f"{path}: cannot read the ablation: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise AblationError(f"{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(spec, dict):
        raise AblationError(f"{path}: an ablation is a mapping with keys {ABLATION_KEYS}")
    unknown = sorted(set(spec) - set(ABLATION_KEYS))
    if unknown:
        raise AblationError(f"{path}: unknown key(s) {unknown}; an ablation has {ABLATION_KEYS}")
    config = spec.get("config")
    if not isinstance(config, dict) or not config:
        raise AblationError(f"{path}: 'config' must be a mapping of the training options it overrides")
    models = spec.get("models", list(all_models))
    if isinstance(models, str):
        models = models.split()
    if not isinstance(models, list) or not models:
        raise AblationError(f"{path}: 'models' must list models of {list(all_models)}")
    strangers = [m for m in models if m not in all_models]
    if strangers:
        raise AblationError(f"{path}: models {strangers} are not trained by the recipe ({list(all_models)})")
    return Ablation(path.stem, path, models, config)


def merge_config(base: Dict, overrides: Dict) -> Dict:
    """``base`` with ``overrides``: nested mappings merged key by key, other values replaced."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def check_training_options(config: Dict, source: Path) -> None:
    """Fail on a top-level option ESPnet's ASR task does not have (a typo would otherwise cost
    a training run before ESPnet rejects it)."""
    from espnet2.tasks.asr import ASRTask

    from espnet_omni.recipe.training_config import unknown_options

    unknown = unknown_options(config, ASRTask)
    if unknown:
        hints = "".join(f"; '{key}': did you mean '{close}'?" for key, close in unknown.items() if close)
        raise AblationError(f"{source}: {sorted(unknown)} are not options of ESPnet's ASR training{hints}")


def only_models(ablation: Ablation, models: Sequence[str]) -> Ablation:
    """``ablation`` restricted to ``models``, each of which it must change."""
    strangers = [m for m in models if m not in ablation.models]
    if strangers:
        raise AblationError(f"{ablation.path}: changes {ablation.models}, not {strangers}")
    return replace(ablation, models=[m for m in ablation.models if m in models])


def write_ablation_configs(ablation: Ablation, config_of: Dict[str, Path], output_dir: Path) -> List[Path]:
    """Write ``output_dir/train_asr_<model>.yaml`` for each of the ablation's models: the
    config in ``config_of[model]`` with the ablation's options. Returns the written paths.

    Every merged config is checked (the keys of its ``*_conf`` mappings against the classes
    they go to) before any file is written."""
    from espnet2.tasks.asr import ASRTask

    import espnet_omni  # noqa: F401  (registers the encoders and model whose options are checked)
    from espnet_omni.recipe.training_config import config_problems

    check_training_options(ablation.config, ablation.path)
    merged_of = {}
    for model in ablation.models:
        source = config_of[model]
        merged_of[model] = merge_config(yaml.safe_load(Path(source).read_text()), ablation.config)
        problems = config_problems(merged_of[model], ASRTask, f"{ablation.path} on {source}")
        if problems:
            raise AblationError("\n".join(problems))
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for model in ablation.models:
        source = config_of[model]
        out = output_dir / f"train_asr_{model}.yaml"
        header = (f"# {source} with the options of the ablation {ablation.path}\n"
                  f"# (written by run_study.sh --ablation; edit those files, not this one)\n")
        out.write_text(header + yaml.safe_dump(merged_of[model], sort_keys=False))
        written.append(out)
    return written
