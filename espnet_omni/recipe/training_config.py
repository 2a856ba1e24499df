"""The keys of a training config checked against the ESPnet task that reads it.

ESPnet rejects an unknown top-level key of a ``--config`` file with its whole usage, and reads
the keys of a ``<name>_conf`` mapping only when it builds the class they go to: a mistyped
one ends in a ``TypeError`` or ``ValueError`` stack trace from inside ESPnet. These checks find
both from the YAML alone, with the file, the line, and the closest valid key.
"""

import difflib
import inspect
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import yaml


class TrainingConfigError(ValueError):
    """A training config with keys its task does not read; the message names file, line and key."""


def option_names(task) -> List[str]:
    """The options of ``task``'s training command: the top-level keys a config may have."""
    return [action.dest for action in task.get_parser()._actions if action.dest != "help"]


def close_match(word: str, choices: Sequence[str]) -> Optional[str]:
    """The choice most like ``word``, or None."""
    found = difflib.get_close_matches(word, list(choices), n=1)
    return found[0] if found else None


def unknown_options(config: Mapping, task) -> Dict[str, Optional[str]]:
    """The top-level keys of ``config`` that ``task`` has no option for, each with its closest
    option (or None)."""
    known = option_names(task)
    return {key: close_match(key, known) for key in config if key not in known}


def class_parameters(cls) -> Optional[List[inspect.Parameter]]:
    """The keyword parameters ``cls(...)`` takes: those of its ``__init__`` and, where that
    passes ``**kwargs`` on, of its base classes'. None when it takes any keyword."""
    import torch

    found: List[inspect.Parameter] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        if klass in (object, torch.nn.Module):  # neither takes a keyword argument
            return found
        try:
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        except (TypeError, ValueError):  # a builtin without a signature
            return None
        found += [p for p in params if p.name != "self" and p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params):
            return found
    return None


def conf_class(task, name: str, choice: Optional[str]) -> Optional[type]:
    """The class ``task`` gives the ``<name>_conf`` mapping to when ``<name>`` is ``choice``."""
    from espnet2.tasks.abs_task import optim_classes, scheduler_classes

    if choice is None:
        return None
    for choices in task.class_choices_list:
        if choices.name == name:
            try:
                return choices.get_class(choice)
            except ValueError:  # not registered: ESPnet's own error says so
                return None
    if name.startswith("optim"):  # optim, optim2, ... with several optimizers
        return optim_classes.get(choice)
    if name.startswith("scheduler"):
        return scheduler_classes.get(choice)
    return None


def _key_lines(text: str) -> Dict[Tuple[str, ...], int]:
    """The line of each top-level key of a YAML mapping, and of the keys of its mappings."""
    lines: Dict[Tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key, value in root.value:
        lines[(key.value,)] = key.start_mark.line + 1
        if isinstance(value, yaml.MappingNode):
            for sub, _ in value.value:
                lines[(key.value, sub.value)] = sub.start_mark.line + 1
    return lines


def config_problems(
    config: Mapping, task, source: str = "the config", choices: Optional[Mapping[str, str]] = None,
    lines: Optional[Mapping[Tuple[str, ...], int]] = None,
) -> List[str]:
    """What ``task`` would reject or not read in ``config``, one message per key.

    ``choices`` are class names given apart from the config (the command line's
    ``--encoder X``); ``lines`` the line of each key in ``source``.
    """
    lines, choices = lines or {}, choices or {}
    kind = task.__name__[:-len("Task")] if task.__name__.endswith("Task") else task.__name__

    def where(*keys: str) -> str:
        line = lines.get(keys)
        return f"{source}:{line}" if line else source

    problems = []
    for key, close in unknown_options(config, task).items():
        hint = f" (did you mean '{close}'?)" if close else ""
        problems.append(f"{where(key)}: '{key}' is not an option of ESPnet's {kind} training{hint}")
    parser = task.get_parser()
    for conf_key, conf in config.items():
        if not conf_key.endswith("_conf") or not isinstance(conf, Mapping):
            continue
        name = conf_key[:-len("_conf")]
        choice = choices.get(name, config.get(name, parser.get_default(name)))
        cls = conf_class(task, name, choice) if isinstance(choice, str) else None
        params = class_parameters(cls) if cls is not None else None
        if params is None:
            continue
        keys = [p.name for p in params]
        # Those without a default are the task's to give (input_size, vocab_size, ...).
        settable = ", ".join(p.name for p in params if p.default is not inspect.Parameter.empty)
        for key in conf:
            if key not in keys:
                close = close_match(key, keys)
                hint = f" (did you mean '{close}'?)" if close else ""
                problems.append(
                    f"{where(conf_key, key)}: {conf_key}: '{key}' is not an option of {name} "
                    f"'{choice}'{hint}; its options: {settable}"
                )
    return problems


def cli_value(argv: Sequence[str], option: str) -> Optional[str]:
    """The value the command line gives ``--<option>`` (the last one), or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{option}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{option}="):
            value = arg.split("=", 1)[1]
    return value


def check_config_file(path: Path, task, argv: Sequence[str] = ()) -> None:
    """Raise :class:`TrainingConfigError` listing the keys of the config ``path`` that ``task``
    would reject or not read, with ``argv``'s class choices (``--encoder X``) applied.

    A file that does not exist or is not a YAML mapping is left to ESPnet's own error.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        config = yaml.safe_load(text)
    except OSError:
        return
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise TrainingConfigError(f"{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(config, Mapping):
        return
    names = [c.name for c in task.class_choices_list] + [
        key[:-len("_conf")] for key in config if key.endswith("_conf")]
    choices = {name: value for name in names if (value := cli_value(argv, name)) is not None}
    problems = config_problems(config, task, str(path), choices, _key_lines(text))
    if problems:
        raise TrainingConfigError("\n".join(problems))
