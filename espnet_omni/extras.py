"""Optional dependencies: importing a package of an extra, with an error that says how to get it.

``pip install espnet-omni`` installs what the encoders, the model and the ESPnet commands
(training, inference, ``count_params``) need. The recipe's toolbox (corpus synthesis,
scoring, benchmark corpora, publishing, training plots) is the ``recipe`` extra; the modules
that use one of its packages import it through :func:`require_extra` at the point of use, so
that the core never imports them and a missing one names the install command.
"""

import importlib
from types import ModuleType


def install_command(extra: str = "recipe") -> str:
    """The pip command that installs ``extra``."""
    return f"pip install 'espnet-omni[{extra}]'"


class MissingExtraError(ModuleNotFoundError):
    """A package of an optional extra is not installed."""


def require_extra(module: str, purpose: str, extra: str = "recipe") -> ModuleType:
    """Import ``module`` (a dotted name) and return it.

    Raises :class:`MissingExtraError` (a ``ModuleNotFoundError``) naming ``purpose`` and the
    install command when ``module``'s own package is missing. A missing dependency *of* that
    package is a broken installation, not a missing extra, and is raised unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if not missing or not (module == missing or module.startswith(missing + ".")):
            raise
        package = module.partition(".")[0]
        raise MissingExtraError(
            f"{purpose} needs the Python package '{package}', which is part of espnet-omni's "
            f"'{extra}' extra: {install_command(extra)}",
            name=package,
        ) from err
