"""Soak run of the recipe's training path: bad utterances, a kill, a resume, nothing lost.

    python benchmarks/soak.py [--work /tmp/omni_soak] [--epochs 6] [--kill_epoch 3] [--nproc 2]

On a copy of the recipe (``egs2/omni_asr/asr1`` beside the package's ``conf/``) with the smoke
settings (generated corpus, tiny configs):

1. prepares the corpus (stage 1) and breaks three training utterances' audio (one file
   missing, one WAV cut off mid-file, one with no samples);
2. validates, filters and prepares tokens and statistics (stages 2-5) with
   ``--max_bad_audio 3``;
3. trains the Omni-router for ``--epochs`` epochs with ``--nproc`` CPU processes (torchrun,
   gloo) twice: once without interruption, once killed (SIGKILL to the whole recipe) in the
   middle of epoch ``--kill_epoch`` and re-run;
4. prints what was lost (utterances other than the broken ones, epochs, weights different
   from the uninterrupted run's: all must be 0) and how long recovery took (restart to the
   first step of the interrupted epoch, and the training time the kill threw away).

Not part of the tests: it takes about as long as three smoke trainings. Exits 1 when anything
was lost.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs2" / "omni_asr" / "asr1"
MODEL = "omni_router"


def recipe_command(args, *options: str):
    return ["./asr.sh", "--smoke", "true", "--python", sys.executable, "--models", MODEL,
            "--use_lm", "false", "--train_set", "train", "--valid_set", "dev", "--test_sets", "test_clean",
            "--max_bad_audio", "3", *options]


def run(root: Path, command, log: Path) -> None:
    with open(log, "a") as out:
        proc = subprocess.run(command, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}); see {log}")


def break_audio(data: Path) -> list:
    """Break three training utterances' audio in place; return their ids."""
    lines = (data / "wav.scp").read_text().splitlines()
    picks = [lines[5].split(), lines[40].split(), lines[80].split()]
    (missing, _), (cut, cut_path), (empty, empty_path) = picks
    Path(picks[0][1]).unlink()
    raw = Path(cut_path).read_bytes()
    Path(cut_path).write_bytes(raw[: len(raw) // 2])
    import soundfile

    soundfile.write(empty_path, [], 16000, subtype="PCM_16")
    return [missing, cut, empty]


def epoch_lines(log: Path, pattern: str) -> list:
    return re.findall(pattern, log.read_text(errors="replace")) if log.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/omni_soak"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--kill_epoch", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    if not 1 < args.kill_epoch <= args.epochs:
        parser.error("--kill_epoch must be in 2..--epochs")

    shutil.rmtree(args.work, ignore_errors=True)
    root = args.work / "egs2" / "omni_asr" / "asr1"
    shutil.copytree(RECIPE, root, ignore=shutil.ignore_patterns("data", "dump", "exp", "smoke", "downloads"))
    (args.work / "conf").symlink_to(REPO / "conf")
    log = args.work / "soak.log"
    print(f"soak in {args.work} (log: {log})", flush=True)

    run(root, recipe_command(args, "--stage", "1", "--stop_stage", "1"), log)
    train_dir = root / "smoke" / "data" / "train"
    total = len((train_dir / "wav.scp").read_text().splitlines())
    broken = break_audio(train_dir)
    run(root, recipe_command(args, "--stage", "2", "--stop_stage", "5"), log)
    kept = {line.split()[0] for line in (root / "smoke" / "dump" / "raw" / "train" / "wav.scp").read_text().splitlines()}
    listed = (root / "smoke" / "dump" / "raw" / "train" / "bad_audio.txt").read_text()

    for expdir in ("exp_reference", "exp_soak"):  # both trainings read stage 5's statistics
        (root / "smoke" / expdir).mkdir()
        for stats in (root / "smoke" / "exp").glob("asr_stats_*"):
            (root / "smoke" / expdir / stats.name).symlink_to(stats.resolve())

    train = ["--stage", "6", "--stop_stage", "6", "--dist_launcher", "torchrun", "--nproc_per_node",
             str(args.nproc), "--asr_args", f"--max_epoch {args.epochs} --seed 0 --log_interval 1"]
    started = time.time()
    run(root, recipe_command(args, *train, "--expdir", "smoke/exp_reference"), log)
    reference_seconds = time.time() - started

    exp = root / "smoke" / "exp_soak" / f"asr_{MODEL}"
    train_log = exp / "train.log"
    interrupted = recipe_command(args, *train, "--expdir", "smoke/exp_soak")
    mark = f"{args.kill_epoch}epoch:train:3-3batch"
    with open(log, "a") as out:
        proc = subprocess.Popen(interrupted, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        while not epoch_lines(train_log, re.escape(mark)):
            if proc.poll() is not None:
                sys.exit(f"training ended before {mark}; see {train_log}")
            time.sleep(0.05)
        killed_at = time.time()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    checkpoint = torch.load(exp / "checkpoint.pth", map_location="cpu", weights_only=False)
    saved_epoch = checkpoint["reporter"]["epoch"]
    saved_at = (exp / "checkpoint.pth").stat().st_mtime
    log_size = train_log.stat().st_size

    restarted = time.time()
    with open(log, "a") as out:
        proc = subprocess.Popen(interrupted, cwd=root, stdout=out, stderr=subprocess.STDOUT)
        resumed_mark = f"{saved_epoch + 1}epoch:train:1-1batch"
        while resumed_mark not in train_log.read_text(errors="replace")[log_size:]:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        back_at = time.time()
        if proc.wait():
            sys.exit(f"the re-run failed; see {log}")

    reference = torch.load(root / "smoke" / "exp_reference" / f"asr_{MODEL}" / f"{args.epochs}epoch.pth",
                           map_location="cpu")
    final = torch.load(exp / f"{args.epochs}epoch.pth", map_location="cpu")
    different = [k for k in reference if k not in final or not torch.equal(reference[k], final[k])]
    ended = {int(e) for e in epoch_lines(train_log, r"(\d+)epoch results: ")}
    lost_epochs = sorted(set(range(1, args.epochs + 1)) - ended)
    lost_utts = total - len(kept) - len(broken)

    print(f"training utterances: {total}; broken by the soak: {len(broken)} ({' '.join(broken)})")
    print(f"left out by stage 3 (--max_bad_audio 3), listed in bad_audio.txt: "
          f"{sum(u in listed for u in broken)} of {len(broken)}; other utterances lost: {lost_utts}")
    print(f"killed in epoch {args.kill_epoch} ({mark}); resumed from the epoch-{saved_epoch} checkpoint")
    print(f"recovery: restart to the first step of epoch {saved_epoch + 1}: {back_at - restarted:.1f} s; "
          f"training thrown away (checkpoint to kill): {killed_at - saved_at:.1f} s; "
          f"uninterrupted run: {reference_seconds:.1f} s for {args.epochs} epochs on {args.nproc} processes")
    print(f"epochs missing from the resumed run's log: {lost_epochs or 0}")
    print(f"weights different from the uninterrupted run's after epoch {args.epochs}: "
          f"{len(different)} of {len(reference)} tensors")
    lost = lost_utts or lost_epochs or different or sum(u in listed for u in broken) != len(broken)
    print("lost: nothing" if not lost else "lost: SOMETHING (see above)")
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
