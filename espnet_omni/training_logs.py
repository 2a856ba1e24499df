"""ESPnet training with its plots and TensorBoard logs on by default where their packages are.

ESPnet's trainer defaults ``--use_matplotlib`` and ``--use_tensorboard`` to true but does not
require either package (both are in ``espnet[train]``): without tensorboard a training run
fails when it starts, without matplotlib at the end of its first epoch. The training commands
of espnet-omni default each flag to whether its package is installed (both come with the
``recipe`` extra), so that a core install trains with ESPnet's text logs; a config or command
line that turns one on without its package fails before training, naming the install command.
:func:`train`, the entry of those commands, also checks the config's keys first and makes the
checkpoints' writes whole.
"""

import argparse
import importlib.util
import sys
from typing import Optional, Sequence

from espnet_omni.whole_file import save_checkpoints_whole
from espnet_omni.extras import MissingExtraError, require_extra
from espnet_omni.launch import config_files
from espnet_omni.recipe.training_config import TrainingConfigError, check_config_file

# flag -> (package, what it is for)
LOGGERS = {
    "use_matplotlib": ("matplotlib", "Plotting training statistics (--use_matplotlib true)"),
    "use_tensorboard": ("tensorboard", "TensorBoard logging (--use_tensorboard true)"),
}


def installed(package: str) -> bool:
    """Whether ``package`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a finder that refuses it; a module without a spec
        return False


def parse_args(task, cmd: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``task``'s training arguments with the logger defaults of what is installed.

    Only the defaults change: a ``--config`` file or the command line still sets either flag.
    Raises :class:`MissingExtraError` when a flag is on and its package missing.
    """
    parser = task.get_parser()
    # ESPnet's parser applies --config values as defaults after these, so they still win.
    parser.set_defaults(**{flag: installed(package) for flag, (package, _) in LOGGERS.items()})
    args = parser.parse_args(cmd)
    if not getattr(args, "collect_stats", False):
        for flag, (package, purpose) in LOGGERS.items():
            if getattr(args, flag, False):
                require_extra(package, purpose)
    return args


def train(task, cmd: Optional[Sequence[str]] = None) -> None:
    """Run ``task.main`` (an ESPnet task's training or ``--collect_stats``) on :func:`parse_args`,
    once the keys of its ``--config`` are checked (:mod:`espnet_omni.recipe.training_config`:
    an unknown or mistyped key stops it with the file, line and closest key, before ESPnet
    parses anything), with its checkpoints written whole (:mod:`espnet_omni.whole_file`)."""
    save_checkpoints_whole()
    argv = sys.argv[1:] if cmd is None else list(cmd)
    try:
        for config in config_files(argv, ("--config",))[-1:]:  # ESPnet reads the last --config
            check_config_file(config, task, argv)
        args = parse_args(task, cmd)
    except (MissingExtraError, TrainingConfigError) as err:
        raise SystemExit(f"ERROR: {err}") from err
    task.main(args=args)
