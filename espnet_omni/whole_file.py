"""Files written whole: a killed writer leaves the old file (or none), never a half-written one
that a resumed run or a later stage would take for a finished one.

The content goes to a temporary file beside the target, is flushed to disk, and is renamed over
the target when complete. ESPnet's trainer writes ``checkpoint.pth`` (model, optimizers,
schedulers, reporter) and ``<N>epoch.pth`` with ``torch.save`` straight to their names; the
training commands route ``torch.save`` to a path through :func:`save_whole`
(:func:`save_checkpoints_whole`), so a run killed while saving resumes from the previous
checkpoint instead of failing to load a truncated one.
"""

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Optional

_torch_save = None  # torch.save as torch defines it, once save_checkpoints_whole replaced it


@contextmanager
def open_whole(path: Path, mode: str = "w", encoding: Optional[str] = "utf-8") -> Iterator[IO]:
    """A file (``mode`` "w" or "wb") to write ``path`` through; it replaces ``path`` when the
    block ends without an exception, and is removed otherwise."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_whole(path: Path, text: str, encoding: str = "utf-8") -> None:
    """``Path(path).write_text(text)``, whole."""
    with open_whole(path, "w", encoding) as out:
        out.write(text)


def save_whole(obj, f, *args, **kwargs) -> None:
    """``torch.save``; to a path, through :func:`open_whole`."""
    import torch

    save = _torch_save or torch.save
    if not isinstance(f, (str, os.PathLike)):
        return save(obj, f, *args, **kwargs)
    with open_whole(f, "wb") as out:
        save(obj, out, *args, **kwargs)


def save_checkpoints_whole() -> None:
    """Make every ``torch.save`` of this process go through :func:`save_whole`."""
    import torch

    global _torch_save
    if torch.save is not save_whole:
        _torch_save = torch.save
        torch.save = save_whole
