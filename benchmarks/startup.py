"""Start-up time of the package's commands: ``python -m espnet_omni.bin.<command> --help``.

    .venv/bin/python benchmarks/startup.py              # every command, 5 rounds (about 3 min on 2 cores)
    .venv/bin/python benchmarks/startup.py --rounds 3 score asr_train

Each round runs every command once, in turn (A, B, C, ..., A, B, C, ...); a command's time is
the median of its rounds' wall times, process start and exit included. A last run with
``python -X importtime`` tells which heavy modules the command imports. Prints a markdown table.
"""

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The imports that dominate start-up, in the order they nest.
HEAVY = ("torch", "espnet2.tasks.asr", "espnet2.tasks.lm", "g2p_en.g2p")


def commands():
    return sorted(p.stem for p in (REPO / "espnet_omni" / "bin").glob("*.py") if p.stem != "__init__")


def run(command, *options):
    return subprocess.run([sys.executable, *options, "-m", f"espnet_omni.bin.{command}", "--help"],
                          cwd=REPO, capture_output=True, text=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commands", nargs="*", help="default: every command in espnet_omni/bin")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    names = args.commands or commands()
    times = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            start = time.perf_counter()
            proc = run(name)
            times[name].append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise SystemExit(f"{name} --help failed:\n{proc.stderr[-2000:]}")
    print("| command | seconds | imports |\n| --- | --- | --- |")
    for name in names:
        imported = set(re.findall(r"\|\s+(\S+)\s*$", run(name, "-X", "importtime").stderr, re.M))
        heavy = ", ".join(m for m in HEAVY if m in imported) or "–"
        print(f"| {name} | {statistics.median(times[name]):.2f} | {heavy} |")


if __name__ == "__main__":
    main()
