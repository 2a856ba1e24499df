"""Test sandbox for Python processes: no network, and chosen modules not importable.

``tests/conftest.py`` loads it into the test process and puts this folder on PYTHONPATH, so
every process a test starts (and theirs) loads it too. It reads:

* ``OMNI_TEST_NETWORK_LOG``: a file; every attempt to resolve a host name or to open a socket
  connection to another machine is appended to it and fails with ``OSError``. Processes that
  swallow the error (NLTK's downloader does) still leave the record. The loopback interface
  and the machine's own name stay usable (torch.distributed's local rendezvous).
* ``OMNI_TEST_BLOCKED_MODULES``: comma-separated top-level module names whose import raises
  ``ModuleNotFoundError``, as if their packages were not installed.
"""

import importlib.abc
import ipaddress
import os
import socket
import sys
import traceback

_log = os.environ.get("OMNI_TEST_NETWORK_LOG")
_blocked = {m for m in os.environ.get("OMNI_TEST_BLOCKED_MODULES", "").split(",") if m}


def _record(what: str) -> None:
    with open(_log, "a", encoding="utf-8") as f:
        f.write(f"pid {os.getpid()} ({' '.join(sys.argv)[:300]}): {what}\n"
                f"{''.join(traceback.format_stack(limit=12))}\n")


def _local(host) -> bool:
    if host in (None, "", "localhost", socket.gethostname()):
        return True
    try:
        return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host).is_loopback
    except ValueError:
        return False


if _log and not getattr(socket, "_omni_test_guarded", False):
    socket._omni_test_guarded = True
    _getaddrinfo = socket.getaddrinfo

    def _guarded(method):
        def guarded(self, address):
            if self.family == getattr(socket, "AF_UNIX", None) or _local(address[0]):
                return method(self, address)
            _record(f"connect {address!r}")
            raise OSError(f"network access blocked in the test sandbox: {address!r}")
        return guarded

    def _guarded_getaddrinfo(host, *args, **kwargs):
        if _local(host):
            return _getaddrinfo(host, *args, **kwargs)
        _record(f"getaddrinfo {host!r}")
        raise socket.gaierror(f"name resolution blocked in the test sandbox: {host!r}")

    socket.socket.connect = _guarded(socket.socket.connect)
    socket.socket.connect_ex = _guarded(socket.socket.connect_ex)
    socket.getaddrinfo = _guarded_getaddrinfo


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in _blocked:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname.split(".")[0])
        return None


if _blocked:
    sys.meta_path.insert(0, _Blocker())
