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
from dataclasses import dataclass
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

    known = {action.dest for action in ASRTask.get_parser()._actions}
    unknown = sorted(set(config) - known)
    if unknown:
        raise AblationError(f"{source}: {unknown} are not options of ESPnet's ASR training")


def write_ablation_configs(ablation: Ablation, config_of: Dict[str, Path], output_dir: Path) -> List[Path]:
    """Write ``output_dir/train_asr_<model>.yaml`` for each of the ablation's models: the
    config in ``config_of[model]`` with the ablation's options. Returns the written paths."""
    check_training_options(ablation.config, ablation.path)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for model in ablation.models:
        source = config_of[model]
        base = yaml.safe_load(Path(source).read_text())
        merged = merge_config(base, ablation.config)
        out = output_dir / f"train_asr_{model}.yaml"
        header = (f"# {source} with the options of the ablation {ablation.path}\n"
                  f"# (written by run_study.sh --ablation; edit those files, not this one)\n")
        out.write_text(header + yaml.safe_dump(merged, sort_keys=False))
        written.append(out)
    return written
