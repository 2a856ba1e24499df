"""Training that survives what long runs meet: a kill mid-epoch (resumed to the model an
uninterrupted run makes), a kill while a checkpoint is written, and two-process CPU DDP with
unbalanced routing and uneven batches, through the same launch path as the recipe's."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from espnet_omni.whole_file import save_whole

from conftest import CONF, run_module

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def with_config(args, model):
    """Training arguments with conf/tiny/<model>.yaml as the config."""
    return [str(CONF / "tiny" / f"{model}.yaml") if a.endswith("omni_router.yaml") else a for a in args]


def test_save_whole_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "checkpoint.pth"
    save_whole({"epoch": 1}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_whole({"epoch": 2, "bad": Unpicklable()}, target)
    assert torch.load(target) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth"]


SAVER = """
import sys, torch
from espnet_omni.whole_file import save_checkpoints_whole
save_checkpoints_whole()
state = {"weights": torch.arange(4_000_000, dtype=torch.float64)}
for step in range(1_000_000):
    state["step"] = step
    torch.save(state, sys.argv[1])
    if step == 0:
        print("saved", flush=True)
"""


def test_a_process_killed_while_saving_leaves_a_complete_checkpoint(tmp_path):
    """SIGKILL at random moments of a loop of 32 MB saves (torch.save straight to the name
    leaves a truncated file at most of them): the file always loads, whole."""
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    target = tmp_path / "checkpoint.pth"
    for delay in (0.05, 0.13, 0.29, 0.41, 0.67):
        proc = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE,
                                env=ENV, text=True)
        assert proc.stdout.readline().strip() == "saved"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = torch.load(target)
        torch.testing.assert_close(state["weights"], torch.arange(4_000_000, dtype=torch.float64))
    assert [p.name for p in tmp_path.glob("*.pth")] == ["checkpoint.pth"]


def read_state(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)  # ESPnet's checkpoint holds numpy scalars


@pytest.mark.timeout(900)
@pytest.mark.parametrize("model", ["omni_router", "switch"])
def test_training_killed_mid_epoch_resumes_to_the_uninterrupted_model(prepared, model):
    """SIGKILL in the middle of epoch 2 of 3; the same command resumes from the epoch-1
    checkpoint (weights, router and experts, optimizer, scheduler, per-epoch seeds) and ends
    with the weights an uninterrupted run ends with, bit for bit (CPU, one thread)."""
    root, train_args, _ = prepared
    args = with_config(train_args, model) + [
        "--max_epoch", "3", "--batch_size", "2", "--log_interval", "1", "--seed", "3", "--resume", "true",
    ]
    whole, killed = f"exp_whole_{model}", f"exp_killed_{model}"
    run_module("espnet_omni.bin.asr_train", *args, "--output_dir", whole, cwd=root)

    log = root / f"{killed}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "espnet_omni.bin.asr_train", *args, "--output_dir", killed],
            cwd=root, env=ENV, stdout=out, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 600
        while "2epoch:train:5-5batch" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    exp = root / killed
    assert (exp / "1epoch.pth").exists() and not (exp / "2epoch.pth").exists()
    checkpoint = read_state(exp / "checkpoint.pth")
    assert checkpoint["reporter"]["epoch"] == 1

    resumed = run_module("espnet_omni.bin.asr_train", *args, "--output_dir", killed, cwd=root)
    assert "2epoch:train:1-1batch" in resumed.stderr and "1epoch:train" not in resumed.stderr
    expected, got = read_state(root / whole / "3epoch.pth"), read_state(exp / "3epoch.pth")
    assert list(got) == list(expected)
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, different
    # The resumed epochs trained the routers and experts on from the checkpoint.
    moe = [k for k in expected if "router" in k or "experts" in k]
    assert moe and all(not torch.equal(checkpoint["model"][k], got[k]) for k in moe)


DDP_WORKER = """
import hashlib, json, os, runpy, sys
import torch
import torch.distributed as dist

import espnet_omni  # noqa: F401
from espnet2.train.trainer import Trainer
from espnet_omni.moe.router import Router, RouterOutput

out_dir = os.environ["DDP_CHECK_DIR"]
rank = int(os.environ["RANK"])
counts = None
digests = []

# Unbalanced routing: rank r sends (nearly) all its frames to expert r, so the other experts get
# no token on it, and experts 2 and 3 none on either rank.
route = Router._route
def unbalanced_route(self, h, token_mask):
    global counts
    out = route(self, h, token_mask)
    bias = torch.full((self.num_experts,), -20.0)
    bias[rank] = 20.0
    logits = out.logits + bias
    probs = logits.softmax(-1)
    gate, index = probs.max(-1, keepdim=True)
    c = torch.bincount(index[:, 0], minlength=self.num_experts)
    counts = c if counts is None else counts + c
    return RouterOutput(logits, probs, index, gate, token_mask)
Router._route = unbalanced_route

# The weights after every optimizer step, as a digest.
step = torch.optim.Adam.step
def step_and_digest(self, *args, **kwargs):
    result = step(self, *args, **kwargs)
    h = hashlib.sha256()
    for group in self.param_groups:
        for p in group["params"]:
            h.update(p.detach().cpu().numpy().tobytes())
    digests.append(h.hexdigest())
    return result
torch.optim.Adam.step = step_and_digest

# Uneven epochs: rank 1 has one batch fewer than rank 0.
train_one_epoch = Trainer.train_one_epoch.__func__
def uneven_epoch(cls, model, iterator, *args, **kwargs):
    batches = list(iterator)
    with open(os.path.join(out_dir, f"batches.{rank}"), "a") as f:
        f.write(f"{len(batches)} " + " ".join(str(len(keys)) for keys, _ in batches) + "\\n")
    return train_one_epoch(cls, model, batches[:-1] if rank == 1 else batches, *args, **kwargs)
Trainer.train_one_epoch = classmethod(uneven_epoch)

try:
    sys.argv = ["asr_train", *sys.argv[1:]]
    runpy.run_module("espnet_omni.bin.asr_train", run_name="__main__")
finally:
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"digests": digests, "counts": counts.tolist() if counts is not None else None}, f)
"""


@pytest.mark.timeout(900)
@pytest.mark.parametrize("model", ["omni_router", "switch"])
def test_two_process_ddp_with_unbalanced_routing_and_uneven_batches(prepared, model, tmp_path):
    """torchrun with two CPU processes (gloo), as the recipe's --dist_launcher torchrun: each
    rank routes its frames to a different expert (the others idle there), batches of 3 split
    2 + 1, rank 1 one batch short per epoch. Both ranks hold identical weights after every
    step, stop together, and exit 0."""
    root, train_args, _ = prepared
    worker = tmp_path / "ddp_worker.py"
    worker.write_text(DDP_WORKER)
    out = f"exp_ddp_{model}"
    args = with_config(train_args, model) + [
        "--max_epoch", "2", "--batch_size", "3", "--output_dir", out,
        "--multiprocessing_distributed", "false", "--dist_backend", "gloo",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(worker), *args],
        cwd=root, env=dict(ENV, DDP_CHECK_DIR=str(tmp_path)), capture_output=True, text=True, timeout=800,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    batches = [(tmp_path / f"batches.{r}").read_text().split("\n")[0].split() for r in (0, 1)]
    n_batches = int(batches[0][0])
    assert int(batches[1][0]) == n_batches
    assert {"2", "1"} <= set(batches[0][1:] + batches[1][1:])  # batches of 3 split 2 + 1
    # Both ranks stopped at rank 1's end of each epoch: one step per batch it had.
    assert len(ranks[0]["digests"]) == len(ranks[1]["digests"]) == 2 * (n_batches - 1)
    assert ranks[0]["digests"] == ranks[1]["digests"]
    assert len(set(ranks[0]["digests"])) == len(ranks[0]["digests"])  # the weights moved each step
    counts = [r["counts"] for r in ranks]
    assert counts[0][0] > 0 and counts[0][1] == 0 and counts[1][1] > 0 and counts[1][0] == 0
    assert counts[0][2:] == counts[1][2:] == [0, 0]
    config = (root / out / "config.yaml").read_text()
    assert "distributed: true" in config and "unused_parameters: false" in config
    assert (root / out / "2epoch.pth").exists()
