"""espnet_model_zoo's cache of local zips, made to follow the zip rather than its path.

``Speech2Text.from_pretrained("model.zip")`` unpacks a local zip through
``ModelDownloader.unpack_local_file`` into ``<cachedir>/<md5 of the zip's absolute path>/`` and
reuses that folder when ESPnet's ``get_dict_from_cache`` finds the files its ``meta.yaml``
names. In ESPnet 202511-202611 that lookup searches one folder too high and never finds them,
so every load unpacks again; were it to find them, a model packed again to the same path (a
recipe's stage 11 after more training) would silently load the old one. :func:`install` wraps
the method so that the folder records the zip's size and modification time
(``.omni_zip_stamp``) and is emptied and unpacked again when they change. ``import
espnet_omni`` installs it as soon as ``espnet_model_zoo.downloader`` is imported; downloads by
name or URL are left as they are.
"""

import functools
import shutil
from pathlib import Path

STAMP = ".omni_zip_stamp"


def zip_stamp(path: Path) -> str:
    """What identifies a version of the zip at ``path``: its size and modification time (ns)."""
    stat = Path(path).stat()
    return f"{stat.st_size} {stat.st_mtime_ns}\n"


def install() -> None:
    """Wrap ``ModelDownloader.unpack_local_file`` (idempotent)."""
    from espnet_model_zoo import downloader

    original = downloader.ModelDownloader.unpack_local_file
    if getattr(original, "follows_zip", False):
        return

    @functools.wraps(original)
    def unpack_local_file(self, name=None):
        path = Path(name).absolute()
        if path.is_file():
            outdir = self.cachedir / downloader.str_to_hash(path)
            stamp = outdir / STAMP
            current = zip_stamp(path)
            if outdir.exists() and (not stamp.exists() or stamp.read_text() != current):
                shutil.rmtree(outdir)  # another zip was at this path: unpack it afresh
            files = original(self, name)
            stamp.write_text(current)
            return files
        return original(self, name)

    unpack_local_file.follows_zip = True
    downloader.ModelDownloader.unpack_local_file = unpack_local_file
