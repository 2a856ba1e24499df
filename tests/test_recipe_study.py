"""The study report on constructed seed folders: per-epoch results from checkpoints and logs,
intervals over seeds, verdicts, the report and its pictures."""

import datetime
import gzip
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from espnet_omni.recipe.results import read_results_table
from espnet_omni.recipe.study import (
    complete_decodes,
    draw_learning_curves,
    make_study_report,
    read_curves,
    read_epoch_results,
    read_seed,
    read_seed_summary,
    read_study,
    study_report,
    summary_path,
    t_interval,
    write_seed_summary,
)

MODELS = ["dense_transformer", "switch", "omni_router"]
SETS = ["test_clean", "test_noise"]
DECODE = "decode_ctc_lm_lm_rnn_valid.cer_ctc.ave"
LOG_LINE = ("[vm] 2026-12-06 23:06:43,637 (trainer:394) INFO: {epoch}epoch results: [train] iter_time=0.012, "
            "loss_ctc={train}, loss=99.380, time=2 minutes and 11.94 seconds, total_count=188, "
            "[valid] loss_ctc=61.843, cer_ctc={cer}, loss_att=nan, [time] time=1.5\n")


def write_errors(path, errors_per_utt):
    path.mkdir(parents=True)
    rows = [f"u{i}\t10\t{e}\t0\t0" for i, e in enumerate(errors_per_utt)]
    (path / "utt_errors.tsv").write_text("utt_id\tref_words\tsub\tdel\tins\n" + "\n".join(rows) + "\n")


def make_seed(root, seed, wer_points, train_loss, nmi=None, noise_changed=None):
    """A seed folder: per model of ``wer_points`` and set 20 utterances of 10 words with
    ``wer_points[model][set]`` errors in total spread over them, a train.log, and a routing.json."""
    seed_dir = root / f"seed{seed}"
    for model in wer_points:
        exp = seed_dir / f"asr_{model}"
        for test_set in SETS:
            errors = wer_points[model][test_set]  # out of 200 words
            write_errors(exp / DECODE / test_set / "score_wer", [errors // 20 + (i < errors % 20) for i in range(20)])
        exp.mkdir(parents=True, exist_ok=True)
        (exp / "train.log").write_text("".join(
            LOG_LINE.format(epoch=e, train=train_loss[model] + 10 * (3 - e), cer=0.5 / e) for e in (1, 2, 3)))
    if nmi:
        (seed_dir / "routing").mkdir()
        noise_changed = noise_changed or {}
        (seed_dir / "routing" / "routing.json").write_text(json.dumps({"models": {
            m: {"agreement": {"mean_offdiagonal": {"nmi": v}},
                "noise": [{"clean": "dev", "noisy": "dev_pink5", "utterances": 20, "blocks": [1, 2],
                           "changed": [noise_changed[m], noise_changed[m] + 0.1],
                           "mean_changed": noise_changed[m] + 0.05}] if m in noise_changed else []}
            for m, v in nmi.items()}}))
    (seed_dir / "RESULTS.md").write_text(
        "| model | test_clean (in-domain) | test_noise | out-of-domain average (1 set) |\n| --- | --- | --- | --- |\n")
    return seed_dir


def test_epoch_results_from_a_log_and_from_a_checkpoint(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(LOG_LINE.format(epoch=1, train=9.5, cer=0.8) + "noise\n"
                   + LOG_LINE.format(epoch=1, train=8.5, cer=0.7))  # resumed: the last report wins
    epochs = read_epoch_results(log)
    assert epochs[1]["train"] == {"iter_time": 0.012, "loss_ctc": 8.5, "loss": 99.38, "total_count": 188.0}
    assert epochs[1]["valid"]["cer_ctc"] == 0.7 and epochs[1]["time"] == {"time": 1.5}
    stats = {1: {"train": {"loss_ctc": 3.0, "train_time": datetime.timedelta(seconds=5)},
                 "valid": {"cer_ctc": np.float64(0.4)}}}
    torch.save({"reporter": {"stats": stats, "epoch": 1}}, tmp_path / "checkpoint.pth")
    # The checkpoint wins over the log; times are left out.
    assert read_curves(tmp_path) == {1: {"train": {"loss_ctc": 3.0}, "valid": {"cer_ctc": 0.4}}}


def test_t_interval_and_verdicts():
    values = [-1.0, -2.0, -3.0]
    interval = t_interval(values)
    half = 4.302653 * statistics.stdev(values) / 3**0.5  # t(0.975, 2 df)
    assert interval.mean == -2.0 and interval.low == pytest.approx(-2 - half) and interval.high == pytest.approx(-2 + half)
    assert interval.verdict(True) == "undecided"  # [-4.48, 0.48]
    assert t_interval([-1.0, -1.1, -0.9]).verdict(True) == "holds"
    assert t_interval([1.0, 1.1, 0.9]).verdict(True) == "does not hold"
    assert t_interval([0.3, 0.35, 0.4]).verdict(False) == "holds"
    assert t_interval([-1.0]).verdict(True) == "undecided (one seed)"


def test_report_over_seeds(tmp_path):
    # Omni-router 2 points better than dense out of domain in every seed, Switch in between.
    for seed in range(3):
        wer_points = {
            "dense_transformer": {"test_clean": 20 + seed, "test_noise": 80},
            "switch": {"test_clean": 20, "test_noise": 78 - seed},
            "omni_router": {"test_clean": 20, "test_noise": 76},
        }
        make_seed(tmp_path, seed, wer_points, {"dense_transformer": 30.0, "switch": 29.0, "omni_router": 28.0 + seed},
                  nmi={"switch": 0.1, "omni_router": 0.5 + 0.01 * seed},
                  noise_changed={"switch": 0.4, "omni_router": 0.3 + 0.01 * seed})
    runs = [read_seed(tmp_path / f"seed{s}", s, MODELS, SETS) for s in range(3)]
    assert complete_decodes(runs, MODELS) == [DECODE]
    cols, _ = read_results_table((tmp_path / "seed0" / "RESULTS.md").read_text())
    assert [(c.set_id, c.in_domain) for c in cols] == [("test_clean", True), ("test_noise", False)]
    png = draw_learning_curves(runs, MODELS, tmp_path / "learning_curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = study_report(runs, MODELS, SETS, ["test_clean"], "omni_router", DECODE, png.name, resamples=200)
    assert report.startswith("# The comparison over 3 training seeds (0, 1, 2)\n")
    assert study_report(runs[:1], MODELS, SETS, ["test_clean"], "omni_router", DECODE, None,
                        resamples=200).startswith("# The comparison over 1 training seed (0)\n")
    # WER per set: mean (sd) over seeds; dense's test_clean 10, 10.5, 11 %.
    assert "| dense_transformer | 10.50 (0.50) | 40.00 (0.00) |" in report
    assert "| omni_router | 10.00 (0.00) | 38.00 (0.00) | **10.00 (0.00)** | **38.00 (0.00)** |" in report
    assert "- vs dense_transformer: -2.00" in report and "seed 2: -2.00 (reduction +5.0%" in report
    claims = {line.split(" | ")[0][2:]: line.split(" | ")[2].rstrip(" |")
              for line in report.splitlines() if line.startswith("| lower") or line.startswith("| more")}
    assert claims == {
        "lower training loss (CTC, last epoch) than dense_transformer": "undecided",  # -2, -1, 0
        "lower training loss (CTC, last epoch) than switch": "undecided",
        "lower out-of-domain WER than dense_transformer": "holds",
        "lower out-of-domain WER than switch": "undecided",  # -1, -0.5, 0
        "more consistent routing across layers than switch (NMI of layer pairs)": "holds",
    }
    assert "![learning curves](learning_curves.png)" in report
    # Routing under noise: per block and mean, over seeds; Omni-router minus Switch.
    assert "| switch | 40.00 (0.00) | 50.00 (0.00) | **45.00 (0.00)** |" in report
    assert "| omni_router | 31.00 (1.00) | 41.00 (1.00) | **36.00 (1.00)** |" in report
    assert "omni_router minus switch: -9.00 [-11.48, -6.52] points." in report


def test_ablation_report_against_the_baseline_seed_by_seed(tmp_path):
    baseline, ablation = tmp_path / "study", tmp_path / "study" / "jitter"
    for seed in range(2):
        make_seed(baseline, seed, {m: {"test_clean": 20, "test_noise": 80} for m in MODELS},
                  {m: 30.0 for m in MODELS}, nmi={"switch": 0.1, "omni_router": 0.5})
        # The ablation trains the MoE models only: Omni-router 4 (seed 0) and 6 (seed 1) errors
        # fewer out of domain than the baseline's, Switch unchanged.
        make_seed(ablation, seed, {"switch": {"test_clean": 20, "test_noise": 80},
                                   "omni_router": {"test_clean": 20, "test_noise": 76 - 2 * seed}},
                  {"switch": 30.0, "omni_router": 29.0}, nmi={"switch": 0.1, "omni_router": 0.6})
    with pytest.raises(FileNotFoundError, match=r"baseline: .*study: no run of seed 2 \(neither seed2/ nor "
                                                r"summaries/seed2.json.gz"):
        read_study(ablation, [0, 1, 2], MODELS, SETS, baseline)
    runs, baseline_runs, from_folders = read_study(ablation, [0, 1], MODELS, SETS, baseline)
    assert from_folders == [0, 1]
    assert [r.from_baseline for r in runs] == [("dense_transformer",)] * 2
    assert baseline_runs[0].from_baseline == ()
    report = study_report(runs, MODELS, SETS, ["test_clean"], "omni_router", DECODE, None, 200,
                          baseline_runs, "The ablation jitter")
    assert report.startswith("# The ablation jitter over 2 training seeds (0, 1)")
    assert "dense_transformer: the baseline's own runs." in report
    section = report.split("## Against the baseline")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| model") and not line.startswith("| ---")}
    assert list(rows) == ["switch", "omni_router"]  # the dense twin is the baseline's
    # Out of domain: -2 and -3 points (t interval over 2 seeds: +-6.35); training loss -1.
    assert rows["omni_router"][1].startswith("-2.50 [-8.85, +3.85] (baseline 40)")
    assert rows["omni_router"][2] == "-1.00 [-1.00, -1.00] (baseline 30)"
    assert rows["switch"][1].startswith("+0.00 [+0.00, +0.00] (baseline 40)")
    # Within the ablation, the baseline's dense twin is the comparison's dense model.
    assert "- vs dense_transformer: -2.50" in report


def test_ablation_of_one_model_takes_the_others_routing_from_the_baseline(tmp_path):
    baseline, ablation = tmp_path / "study", tmp_path / "study" / "jitter"
    for seed in range(2):
        make_seed(baseline, seed, {m: {"test_clean": 20, "test_noise": 80} for m in MODELS},
                  {m: 30.0 for m in MODELS}, nmi={"switch": 0.1, "omni_router": 0.5},
                  noise_changed={"switch": 0.4, "omni_router": 0.3})
        make_seed(ablation, seed, {"omni_router": {"test_clean": 20, "test_noise": 78}}, {"omni_router": 29.0},
                  nmi={"omni_router": 0.6 + 0.1 * seed}, noise_changed={"omni_router": 0.2})
    runs, baseline_runs, _ = read_study(ablation, [0, 1], MODELS, SETS, baseline)
    assert [r.from_baseline for r in runs] == [("dense_transformer", "switch")] * 2
    report = study_report(runs, MODELS, SETS, ["test_clean"], "omni_router", DECODE, None, 200,
                          baseline_runs, "The ablation jitter")
    # The ablated Omni-router's layer agreement (0.6, 0.7) against the baseline's Switch (0.1).
    assert "| more consistent routing across layers than switch (NMI of layer pairs) | +0.55 [" in report
    assert "| switch | 40.00 (0.00) | 50.00 (0.00) | **45.00 (0.00)** |" in report
    assert "omni_router minus switch: -20.00" in report


def make_report(study_dir, seeds, *extra):
    return subprocess.run([sys.executable, "-m", "espnet_omni.bin.make_study_report", "--study_dir", str(study_dir),
                           "--seeds", *map(str, seeds), "--resamples", "200", *extra],
                          capture_output=True, text=True)


def three_seeds(root):
    for seed in range(3):
        make_seed(root, seed, {"dense_transformer": {"test_clean": 20 + seed, "test_noise": 80},
                               "switch": {"test_clean": 21, "test_noise": 78 - seed},
                               "omni_router": {"test_clean": 19, "test_noise": 76 + seed}},
                  {"dense_transformer": 30.0, "switch": 29.5, "omni_router": 28.0 + seed},
                  nmi={"switch": 0.1, "omni_router": 0.5 + 0.01 * seed},
                  noise_changed={"switch": 0.4, "omni_router": 0.3 + 0.01 * seed})


def test_seed_summary_holds_what_the_report_reads(tmp_path):
    three_seeds(tmp_path)
    run = read_seed(tmp_path / "seed1", 1, MODELS, SETS)
    run.routing["models"]["omni_router"]["per_layer"] = [[0.5] * 4] * 6  # analysed, not reported
    path = write_seed_summary(tmp_path / "summaries" / "seed1.json.gz", run, SETS, ["test_clean"])
    again, sets, in_domain = read_seed_summary(path)
    assert (sets, in_domain) == (SETS, ["test_clean"])
    assert again.seed == 1 and again.from_baseline == ()
    assert again.errors == run.errors  # every utterance
    assert json.dumps(again.curves, sort_keys=True) == json.dumps(run.curves, sort_keys=True)  # NaN as NaN
    assert again.routing["models"]["omni_router"] == {
        "agreement": {"mean_offdiagonal": {"nmi": 0.51}}, "noise": run.routing["models"]["omni_router"]["noise"]}
    # The same results, the same bytes (the file can be kept in version control).
    first = path.read_bytes()
    write_seed_summary(path, again, sets, in_domain)
    assert path.read_bytes() == first
    # ... whatever the file's name or the writing process (no temporary file's name in the header).
    assert write_seed_summary(tmp_path / "kept" / "s1.json.gz", again, sets, in_domain).read_bytes() == first


def test_summary_of_a_broken_file_or_another_format_is_named(tmp_path):
    path = tmp_path / "seed0.json.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="seed0.json.gz: not a study summary"):
        read_seed_summary(path)
    path.write_bytes(gzip.compress(json.dumps({"format": 99}).encode()))
    with pytest.raises(ValueError, match="seed0.json.gz: summary format 99, this version reads 1"):
        read_seed_summary(path)
    proc = make_report(tmp_path, [0], "--sets", "test_clean", "--in_domain", "test_clean")
    assert proc.returncode == 1 and "no run of seed 0" in proc.stderr
    (tmp_path / "summaries").mkdir()
    path.rename(tmp_path / "summaries" / "seed0.json.gz")
    proc = make_report(tmp_path, [0])
    assert proc.returncode == 1 and "summaries/seed0.json.gz: summary format 99" in proc.stderr


def test_report_is_made_again_from_the_summaries_alone(tmp_path):
    study = tmp_path / "study"
    three_seeds(study)
    proc = make_report(study, [0, 1, 2])
    assert proc.returncode == 0, proc.stderr
    report, curves = (study / "REPORT.md").read_text(), (study / "learning_curves.png").read_bytes()
    assert "| lower out-of-domain WER than dense_transformer |" in report
    assert sorted(p.name for p in (study / "summaries").iterdir()) == [f"seed{s}.json.gz" for s in range(3)]
    kept = tmp_path / "kept"
    kept.mkdir()
    shutil.copytree(study / "summaries", kept / "summaries")
    (study / "REPORT.md").unlink()
    proc = make_report(kept, [0, 1, 2])  # no seed folders, no RESULTS.md
    assert proc.returncode == 0, proc.stderr
    assert (kept / "REPORT.md").read_text() == report
    assert (kept / "learning_curves.png").read_bytes() == curves
    assert sorted(p.name for p in (kept / "summaries").iterdir()) == [f"seed{s}.json.gz" for s in range(3)]


def test_ablation_against_a_baseline_kept_as_summaries(tmp_path):
    baseline, ablation = tmp_path / "study", tmp_path / "study" / "jitter"
    three_seeds(baseline)
    assert make_report(baseline, [0, 1]).returncode == 0
    for seed in range(2):
        shutil.rmtree(baseline / f"seed{seed}")
        make_seed(ablation, seed, {"switch": {"test_clean": 21, "test_noise": 78 - seed},
                                   "omni_router": {"test_clean": 19, "test_noise": 74}},
                  {"switch": 29.5, "omni_router": 27.0}, nmi={"switch": 0.1, "omni_router": 0.6})
    proc = make_report(ablation, [0, 1], "--baseline_dir", str(baseline))
    assert proc.returncode == 0, proc.stderr
    report = (ablation / "REPORT.md").read_text()
    assert "dense_transformer: the baseline's own runs." in report
    # Omni-router out of domain: 76 and 77 errors of 200 words in the baseline, 74 here.
    assert "| omni_router | +0.00 [+0.00, +0.00] (baseline 9.5) | -1.25 [-4.43, +1.93] (baseline 38.2) |" in report
    # The ablation's summaries keep the baseline's dense twin they were compared with.
    run, _, _ = read_seed_summary(summary_path(ablation, 1))
    assert run.from_baseline == ("dense_transformer",) and "dense_transformer" in run.errors[DECODE]
    shutil.rmtree(baseline / "seed2")  # the baseline has neither a folder nor a summary of seed 2
    proc = make_report(ablation, [0, 1, 2], "--baseline_dir", str(baseline))
    assert proc.returncode == 1 and f"ERROR: baseline: {baseline}: no run of seed 2" in proc.stderr


DOCS_STUDY = Path(__file__).resolve().parents[1] / "docs" / "study"


def kept_seeds(study_dir):
    return sorted(int(p.name[len("seed"):-len(".json.gz")]) for p in (study_dir / "summaries").glob("seed*.json.gz"))


def test_the_repositorys_study_reports_are_made_again_from_its_summaries(tmp_path):
    """docs/study's reports, every number of them, are what its kept summaries give."""
    kept = tmp_path / "study"
    shutil.copytree(DOCS_STUDY / "summaries", kept / "summaries")
    assert len(kept_seeds(kept)) >= 3
    assert make_study_report(kept, kept_seeds(kept)) == (DOCS_STUDY / "REPORT.md").read_text()
    for name in ("jitter", "train_noise"):
        shutil.copytree(DOCS_STUDY / name / "summaries", kept / name / "summaries")
        assert len(kept_seeds(kept / name)) >= 2, name
        ablation = make_study_report(kept / name, kept_seeds(kept / name), baseline_dir=kept)
        assert ablation == (DOCS_STUDY / name / "REPORT.md").read_text(), name
