"""Run an ESPnet entry point with espnet-omni registered, clear errors and a clean exit.

The commands that wrap an ESPnet entry point import ``espnet_omni`` (which registers the
classes) at module level, so that processes started by ESPnet with the ``spawn`` method, which
re-import the main module, register them too.
"""

import atexit
import difflib
import re
import sys
from typing import Callable, List, Optional, Sequence

import torch

from espnet_omni.registration import ENCODER_NAMES, MODEL_NAMES

_UNKNOWN_CHOICE = re.compile(r"--(\w+) must be one of (\(.*\)): --\w+ (\S+)")


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# Processes spawned by ESPnet end without passing through main(): tear down there too.
atexit.register(_destroy_process_group)


def config_files(argv: Sequence[str], names: Sequence[str] = ("--config", "--asr_train_config")) -> List[str]:
    """The values of the options ``names`` (config files) on a command line, in order."""
    found = []
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                found.append(argv[i + 1])
            elif arg.startswith(name + "="):
                found.append(arg.split("=", 1)[1])
    return found


def explain_unknown_choice(err: ValueError, argv: List[str]) -> Optional[str]:
    """A message saying what to do when a config names an unregistered class."""
    match = _UNKNOWN_CHOICE.search(str(err))
    if match is None:
        return None
    kind, choices, name = match.groups()
    ours = {"encoder": ENCODER_NAMES, "model": MODEL_NAMES}.get(kind, {})
    close = difflib.get_close_matches(name, list(ours), n=1)
    where = " or ".join(config_files(argv)) or "the command line"
    lines = [f"{where}: {kind} '{name}' is not a registered {kind}."]
    if close:
        lines.append(f"Did you mean '{close[0]}'?")
    lines.append(
        f"espnet-omni registers the {kind}s {sorted(ours)}. A model trained with another "
        "ESPnet plugin needs that plugin imported before the model is built."
    )
    lines.append(f"Registered {kind}s: {choices}")
    return "\n".join(lines)


def run(espnet_main: Callable[[Optional[List[str]]], None], cmd: Optional[List[str]] = None):
    """Call an ESPnet ``main(cmd)``; on success end a distributed run cleanly."""
    argv = sys.argv[1:] if cmd is None else cmd
    try:
        espnet_main(cmd)
    except ValueError as err:
        message = explain_unknown_choice(err, argv)
        _destroy_process_group()
        if message is None:
            raise
        raise SystemExit(f"ERROR: {message}") from err
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Without the barrier a rank that finishes first can tear down the group while
        # another is still in its last collective (seen as random aborts at exit).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
