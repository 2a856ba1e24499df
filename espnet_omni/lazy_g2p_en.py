"""ESPnet's import of ``g2p_en``, deferred to its first use and without NLTK downloads.

``espnet2.text.phoneme_tokenizer`` imports ``g2p_en`` at module level, and every ESPnet task
imports that module (``espnet2.tasks.asr``, ``espnet2.tasks.lm``, ``espnet2.bin.tokenize_text``).
Executing ``g2p_en`` imports nltk and inflect (about 2 s) and, where NLTK's ``cmudict`` and
``averaged_perceptron_tagger_eng`` data are missing, calls ``nltk.download`` for each: every
training, decoding and tokenising process opens network connections (and stalls where DNS
hangs) for a G2P that only ``--g2p g2p_en`` uses.

``import espnet_omni`` installs a finder that loads ``g2p_en`` lazily: the module executes at
its first attribute access, when a ``g2p_en`` tokenizer is used. While it executes,
``nltk.download`` downloads nothing and logs the command that fetches the data; with the data
missing, ``g2p_en`` then fails with NLTK's ``LookupError`` naming the resource. With the data
installed (``python -m nltk.downloader cmudict averaged_perceptron_tagger_eng``), g2p_en works
as in ESPnet.
"""

import importlib.abc
import importlib.util
import logging
import sys

MODULE = "g2p_en"
NLTK_DATA = ("cmudict", "averaged_perceptron_tagger_eng")


def _no_download(info_or_id=None, *args, **kwargs) -> bool:
    logging.getLogger(__name__).warning(
        "not downloading NLTK data %r (espnet-omni makes no network connections); to use "
        "g2p_en, fetch it once with: python -m nltk.downloader %s",
        info_or_id, " ".join(NLTK_DATA),
    )
    return False  # what nltk.download returns when a download fails


class _OfflineLoader(importlib.abc.Loader):
    """Executes g2p_en with ``nltk.download`` replaced by :func:`_no_download`."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        import nltk

        download = nltk.download
        nltk.download = _no_download
        try:
            self._loader.exec_module(module)
        finally:
            nltk.download = download


class _LazyG2pEn(importlib.abc.MetaPathFinder):
    """Finds g2p_en with the other finders and gives it a lazy, offline loader."""

    def __init__(self):
        self._finding = False

    def find_spec(self, fullname, path, target=None):
        if fullname != MODULE or self._finding:
            return None
        # importlib holds g2p_en's module lock here, so no other thread is in this branch.
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = importlib.util.LazyLoader(_OfflineLoader(spec.loader))
        return spec


def install() -> None:
    """Make the next import of g2p_en lazy and offline (no-op once it is imported)."""
    if MODULE not in sys.modules and not any(isinstance(f, _LazyG2pEn) for f in sys.meta_path):
        sys.meta_path.insert(0, _LazyG2pEn())
