"""A packed model (``espnet2.bin.pack`` zip, model-zoo or Hugging Face name) as an experiment
folder the recipe's decoding stage can use.

``unpack_into`` unpacks with espnet_model_zoo (a local zip, a URL, or a name it can download)
into ``<exp_dir>/packed/`` and links, beside it, the files decoding reads from a trained
experiment: ``config.yaml``, the model file, and ``lm/{config.yaml,model.pth}`` when the
package holds a language model.
"""

import os
from pathlib import Path
from typing import Dict


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
