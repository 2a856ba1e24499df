"""Print the merged requirement list of installed distributions, one per line.

Used by tools/install.sh to install ESPnet's dependencies without ESPnet's stale
setuptools pin::

    python tools/requirements.py espnet "espnet-omni[recipe,test]" --replace "setuptools>=77.0.3,<81"

The named distributions themselves, and torch/torchaudio (chosen by the install script),
are left out.
"""

import argparse
import importlib.metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ALREADY_CHOSEN = {"torch", "torchaudio"}


def collect(dists, replacements):
    """Return the requirement strings of ``dists`` (``name[extra,...]``), markers evaluated."""
    roots = [Requirement(d) for d in dists]
    skip = {canonicalize_name(r.name) for r in roots} | ALREADY_CHOSEN
    merged = {}
    for root in roots:
        extras = set(root.extras) | {""}
        for line in importlib.metadata.requires(root.name) or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras):
                continue
            name = canonicalize_name(req.name)
            if name in skip:
                continue
            if name in replacements:
                req = Requirement(replacements[name])
            req.marker = None
            if name in merged:
                merged[name].extras |= req.extras
                merged[name].specifier &= req.specifier
            else:
                merged[name] = req
    return [str(merged[k]) for k in sorted(merged)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dists", nargs="+", help="installed distributions, extras allowed")
    parser.add_argument("--replace", action="append", default=[], help="requirement to use instead")
    args = parser.parse_args()
    replacements = {canonicalize_name(Requirement(r).name): r for r in args.replace}
    print("\n".join(collect(args.dists, replacements)))


if __name__ == "__main__":
    main()
