"""A packed model (``espnet2.bin.pack`` zip, model-zoo or Hugging Face name) as an experiment
folder the recipe's decoding stage can use, and the files of any model source.

``unpack_into`` unpacks with espnet_model_zoo (a local zip, a URL, or a name it can download)
into ``<exp_dir>/packed/`` and links, beside it, the files decoding reads from a trained
experiment: ``config.yaml``, the model file, and ``lm/{config.yaml,model.pth}`` when the
package holds a language model. ``resolve_model_files`` finds those files for an experiment
folder or a packed model, the way the analysis and transcription commands take a ``--model``.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

# Model files an experiment folder is searched for, in order, when none is named.
MODEL_FILES = (
    "valid.cer_ctc.ave.pth", "valid.cer_ctc.best.pth", "valid.loss.ave.pth",
    "valid.loss.best.pth", "valid.acc.ave.pth", "valid.acc.best.pth", "packed.pth",
)


class ModelSourceError(ValueError):
    """A --model that is neither an experiment folder with a model file nor a packed model."""


@dataclass
class ModelFiles:
    """The files of an ASR model, and of the LM packed with it (None without)."""

    config: Path
    model: Path
    lm_config: Optional[Path] = None
    lm_model: Optional[Path] = None


def _link(target: str, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(Path(target).resolve(), link)


def unpack_into(source: str, exp_dir: Path, model_file: str = "packed.pth") -> Dict[str, str]:
    """Unpack ``source`` for decoding from ``exp_dir``; returns espnet_model_zoo's file map.

    Raises:
        FileNotFoundError when ``source`` is neither a file, a URL nor a name that resolves,
        ValueError when the package has no ASR model.
    """
    from espnet_model_zoo.downloader import ModelDownloader

    exp_dir = Path(exp_dir)
    remote = "://" in source or (source.count("/") == 1 and not source.endswith(".zip"))  # URL, user/repo
    if not remote and not Path(source).exists():
        raise FileNotFoundError(f"{source}: no such packed model")
    files = ModelDownloader(cachedir=str(exp_dir / "packed")).download_and_unpack(source)
    if "asr_train_config" not in files or "asr_model_file" not in files:
        raise ValueError(f"{source}: not a packed ASR model (it holds {sorted(files)})")
    _link(files["asr_train_config"], exp_dir / "config.yaml")
    _link(files["asr_model_file"], exp_dir / model_file)
    if "lm_train_config" in files and "lm_file" in files:
        _link(files["lm_train_config"], exp_dir / "lm" / "config.yaml")
        _link(files["lm_file"], exp_dir / "lm" / "model.pth")
    return files


def model_name(source: str) -> str:
    """exp/asr_omni_router -> omni_router; asr_switch.zip -> switch; user/repo -> repo."""
    name = Path(source.rstrip("/")).name
    if name.endswith(".zip"):
        name = name[: -len(".zip")]
    return name[len("asr_"):] if name.startswith("asr_") else name


def resolve_model_files(source: str, model_file: Optional[str], unpack_dir: Path) -> ModelFiles:
    """The files of an experiment folder (``config.yaml``, ``model_file`` or the first of
    :data:`MODEL_FILES`, ``lm/`` when there is one), or of a packed model unpacked under
    ``unpack_dir`` (a zip, a URL or a model-zoo name).

    Raises ModelSourceError saying what is missing.
    """
    path = Path(source)
    if path.is_dir():
        config = path / "config.yaml"
        if not config.exists():
            raise ModelSourceError(f"{path}: no config.yaml (not an ESPnet experiment folder)")
        candidates = [path / model_file] if model_file else [path / name for name in MODEL_FILES]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            present = sorted(p.name for p in path.glob("*.pth"))
            raise ModelSourceError(
                f"{path}: none of {[c.name for c in candidates]} exists (model files there: "
                f"{present or 'none'}); name one with --model_file"
            )
        exp_dir = path
    else:
        try:
            unpack_into(source, unpack_dir, "packed.pth")
        except (FileNotFoundError, ValueError) as err:
            raise ModelSourceError(str(err)) from err
        exp_dir, config, found = unpack_dir, unpack_dir / "config.yaml", unpack_dir / "packed.pth"
    lm = exp_dir / "lm"
    if (lm / "config.yaml").exists() and (lm / "model.pth").exists():
        return ModelFiles(config, found, lm / "config.yaml", lm / "model.pth")
    return ModelFiles(config, found)
