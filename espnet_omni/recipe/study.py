"""The comparison over training seeds (``run_study.sh``): what each seed's runs measured, their
mean and spread, paired differences with intervals over seeds, learning curves, and a verdict
on each of the paper's claims.

A study folder holds ``seed<N>/`` experiment folders as ``run_study.sh`` makes them:
``asr_<model>/checkpoint.pth`` (whose reporter holds ESPnet's per-epoch results; else
``train.log``), ``asr_<model>/<decode>/<set>/score_wer/utt_errors.tsv`` (the scoring stage) and
``routing/routing.json`` (the routing analysis). ``summaries/seed<N>.json.gz`` holds what the
report reads of a seed in a few hundred KB (:func:`write_seed_summary`), so that the report can be
made again, and an ablation compared with the baseline, once the experiment folders are gone.
"""

import gzip
import json
import math
import numbers
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_omni.recipe.results import macro_wer, paired_bootstrap, read_results_table
from espnet_omni.recipe.scoring import UttErrors, read_utt_errors, wer
from espnet_omni.whole_file import open_whole, write_text_whole

EPOCH_LINE = re.compile(r"(\d+)epoch results: (.*)$")


def read_epoch_results(train_log: Path) -> Dict[int, Dict[str, Dict[str, float]]]:
    """``{epoch: {"train": {key: value}, "valid": {key: value}}}`` from ESPnet's train.log (the
    last report of an epoch wins, as after a resume). Values that are not numbers are left out."""
    epochs: Dict[int, Dict[str, Dict[str, float]]] = {}
    for line in Path(train_log).read_text(errors="replace").splitlines():
        match = EPOCH_LINE.search(line)
        if not match:
            continue
        parts: Dict[str, Dict[str, float]] = {}
        for phase, body in re.findall(r"\[(\w+)\] (.*?)(?=, \[\w+\] |$)", match.group(2)):
            values = {}
            for item in body.split(", "):
                key, _, value = item.partition("=")
                try:
                    values[key] = float(value)
                except ValueError:
                    continue
            parts[phase] = values
        epochs[int(match.group(1))] = parts
    return epochs


def read_curves(exp: Path) -> Dict[int, Dict[str, Dict[str, float]]]:
    """A training run's per-epoch results: from its checkpoint's reporter (every epoch, whatever
    happened to the log), else from its train.log."""
    checkpoint = exp / "checkpoint.pth"
    if checkpoint.exists():
        import torch

        # ESPnet's own checkpoint, loaded as ESPnet's trainer loads it to resume.
        stats = torch.load(checkpoint, map_location="cpu", weights_only=False)["reporter"]["stats"]
        return {int(epoch): {phase: {k: float(v) for k, v in values.items() if isinstance(v, numbers.Real)}
                             for phase, values in phases.items()}
                for epoch, phases in stats.items()}  # times (timedelta) left out
    if (exp / "train.log").exists():
        return read_epoch_results(exp / "train.log")
    return {}


@dataclass
class Interval:
    """Mean of per-seed values with a 95% t interval over the seeds (None with one seed)."""

    mean: float
    low: Optional[float]
    high: Optional[float]
    values: List[float]

    def verdict(self, claim_negative: bool = True) -> str:
        """For a claimed difference below 0 (``claim_negative``) or above: holds when the
        interval lies on the claimed side, does not hold when it lies on the other."""
        if self.low is None:
            return "undecided (one seed)"
        if (self.high < 0) if claim_negative else (self.low > 0):
            return "holds"
        if (self.low > 0) if claim_negative else (self.high < 0):
            return "does not hold"
        return "undecided"

    def __str__(self) -> str:
        if self.low is None:
            return f"{self.mean:+.2f}"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Student-t interval of the mean of ``values`` (one per seed)."""
    values = list(values)
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, None, None, values)
    from scipy.stats import t

    half = t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, values)


@dataclass
class SeedRun:
    """What one seed measured: per model, WER per set and decoding, curves, routing."""

    seed: int
    errors: Dict[str, Dict[str, Dict[str, list]]]  # decode -> model -> set -> UttErrors
    curves: Dict[str, Dict[int, Dict[str, Dict[str, float]]]]  # model -> epoch results
    routing: Optional[dict]
    from_baseline: Tuple[str, ...] = ()  # an ablation's models that are the baseline's


def read_seed(seed_dir: Path, seed: int, models: Sequence[str], sets: Sequence[str],
              baseline: Optional[SeedRun] = None) -> SeedRun:
    """The results of ``seed_dir`` (a seed's experiment folder) that exist; a model it lacks is
    taken from ``baseline`` (the baseline study's run of the same seed) when given."""
    errors: Dict[str, Dict[str, Dict[str, list]]] = {}
    curves = {}
    from_baseline = []
    routing_json = seed_dir / "routing" / "routing.json"
    routing = None
    if routing_json.exists():
        import json

        routing = json.loads(routing_json.read_text())
    for model in models:
        exp = seed_dir / f"asr_{model}"
        if not exp.exists() and baseline is not None:
            from_baseline.append(model)
            curves[model] = baseline.curves.get(model, {})
            # The routing analysis covers the models trained here.
            if model in (baseline.routing or {}).get("models", {}):
                routing = routing or {}
                routing.setdefault("models", {})[model] = baseline.routing["models"][model]
            for decode, by_model in baseline.errors.items():
                if model in by_model:
                    errors.setdefault(decode, {})[model] = by_model[model]
            continue
        curves[model] = read_curves(exp)
        for decode in sorted(p.name for p in exp.glob("decode_*") if p.is_dir()):
            found = {s: exp / decode / s / "score_wer" / "utt_errors.tsv" for s in sets}
            if all(path.exists() for path in found.values()):
                errors.setdefault(decode, {})[model] = {s: read_utt_errors(p) for s, p in found.items()}
    return SeedRun(seed, errors, curves, routing, tuple(from_baseline))


SUMMARY_FORMAT = 1


def summary_path(study_dir: Path, seed: int) -> Path:
    return Path(study_dir) / "summaries" / f"seed{seed}.json.gz"


def write_seed_summary(path: Path, run: SeedRun, sets: Sequence[str], in_domain: Sequence[str]) -> Path:
    """Write what the report reads of ``run``: per decoding, model and set each utterance's
    (reference words, substitutions, deletions, insertions), the per-epoch results, and of the
    routing analysis each model's layer agreement and noise pairs. Gzipped JSON with a fixed
    header time, so that the same results give the same bytes."""
    utt_ids: Dict[str, List[str]] = {}
    errors: Dict[str, Dict[str, Dict[str, list]]] = {}
    for decode, by_model in run.errors.items():
        for model, by_set in by_model.items():
            for test_set, utts in by_set.items():
                ids = utt_ids.setdefault(test_set, [u.utt_id for u in utts])
                if [u.utt_id for u in utts] != ids:
                    raise ValueError(f"seed {run.seed}: {decode} of {model} scored other utterances of {test_set}")
                errors.setdefault(decode, {}).setdefault(model, {})[test_set] = [
                    [u.ref_words, u.sub, u.dele, u.ins] for u in utts]
    routing = None
    if run.routing is not None:
        routing = {"models": {}}
        for model, analysed in run.routing.get("models", {}).items():
            kept = {key: analysed[key] for key in ("agreement", "noise") if key in analysed}
            if "agreement" in kept:
                kept["agreement"] = {"mean_offdiagonal": kept["agreement"].get("mean_offdiagonal", {})}
            routing["models"][model] = kept
    summary = {"format": SUMMARY_FORMAT, "seed": run.seed, "sets": list(sets), "in_domain": list(in_domain),
               "from_baseline": list(run.from_baseline), "utt_ids": utt_ids, "errors": errors,
               "curves": {model: {str(epoch): phases for epoch, phases in curve.items()}
                          for model, curve in run.curves.items()},
               "routing": routing}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No name (GzipFile would store the temporary file's) and no time in the header: the same bytes.
    with open_whole(path, "wb") as f, gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) as z:
        z.write(json.dumps(summary, sort_keys=True, separators=(",", ":")).encode())
    return path


def read_seed_summary(path: Path) -> Tuple[SeedRun, List[str], List[str]]:
    """(the seed's results, its test sets, the in-domain ones) from :func:`write_seed_summary`'s file."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: not a study summary ({err})") from None
    if summary.get("format") != SUMMARY_FORMAT:
        raise ValueError(f"{path}: summary format {summary.get('format')}, this version reads {SUMMARY_FORMAT}")
    ids = summary["utt_ids"]
    errors = {decode: {model: {s: [UttErrors(u, *counts) for u, counts in zip(ids[s], rows)]
                               for s, rows in by_set.items()}
                       for model, by_set in by_model.items()}
              for decode, by_model in summary["errors"].items()}
    curves = {model: {int(epoch): phases for epoch, phases in curve.items()}
              for model, curve in summary["curves"].items()}
    run = SeedRun(summary["seed"], errors, curves, summary["routing"], tuple(summary["from_baseline"]))
    return run, summary["sets"], summary["in_domain"]


def read_seed_or_summary(study_dir: Path, seed: int, models: Sequence[str], sets: Sequence[str],
                         baseline: Optional[SeedRun] = None) -> Tuple[SeedRun, bool]:
    """A seed of ``study_dir`` from its experiment folder ``seed<N>/``, else from its summary;
    with whether it came from the folder.

    Raises:
        FileNotFoundError: the study has neither.
    """
    seed_dir = Path(study_dir) / f"seed{seed}"
    if seed_dir.is_dir():
        return read_seed(seed_dir, seed, models, sets, baseline), True
    summary = summary_path(study_dir, seed)
    if summary.is_file():
        return read_seed_summary(summary)[0], False
    raise FileNotFoundError(f"{study_dir}: no run of seed {seed} (neither seed{seed}/ nor "
                            f"{summary.relative_to(study_dir)}; run run_study.sh with that seed first)")


def read_study(study_dir: Path, seeds: Sequence[int], models: Sequence[str], sets: Sequence[str],
               baseline_dir: Optional[Path] = None) -> Tuple[List[SeedRun], Optional[List[SeedRun]], List[int]]:
    """The seeds of ``study_dir``, and for an ablation (``baseline_dir``) the baseline study's
    same seeds, whose models stand in for those the ablation did not train; each seed from its
    experiment folder, else from its summary. Third: the seeds read from their folders."""
    baseline_runs = None
    if baseline_dir is not None:
        baseline_runs = []
        for seed in seeds:
            try:
                baseline_runs.append(read_seed_or_summary(baseline_dir, seed, models, sets)[0])
            except FileNotFoundError as err:
                raise FileNotFoundError(f"baseline: {err}") from None
    runs, from_folders = [], []
    for i, seed in enumerate(seeds):
        run, from_folder = read_seed_or_summary(study_dir, seed, models, sets,
                                                baseline_runs[i] if baseline_runs else None)
        runs.append(run)
        if from_folder:
            from_folders.append(seed)
    return runs, baseline_runs, from_folders


def complete_decodes(runs: Sequence[SeedRun], models: Sequence[str]) -> List[str]:
    """The decodings every seed has for every model."""
    names = set.intersection(*(set(r.errors) for r in runs)) if runs else set()
    return sorted(d for d in names if all(set(models) <= set(r.errors[d]) for r in runs))


def wer_table(runs: Sequence[SeedRun], decode: str, models: Sequence[str], sets: Sequence[str],
              in_domain: Sequence[str]) -> List[str]:
    """Markdown rows: per model, mean (sd) over seeds of each set's WER, the in-domain and
    out-of-domain averages."""
    out_of_domain = [s for s in sets if s not in in_domain]
    groups = [("in-domain", [s for s in sets if s in in_domain]), ("out-of-domain", out_of_domain)]
    groups = [(name, group) for name, group in groups if group]
    lines = ["| model | " + " | ".join(list(sets) + [f"{name} average" for name, _ in groups]) + " |",
             "| --- |" + " --- |" * (len(sets) + len(groups))]
    for model in models:
        cells = []
        for s in sets:
            cells.append(_mean_sd([wer(r.errors[decode][model][s]) for r in runs]))
        for _, group in groups:
            cells.append(_mean_sd([macro_wer(r.errors[decode], model, group) for r in runs], bold=True))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _mean_sd(values: Sequence[float], bold: bool = False) -> str:
    text = f"{statistics.fmean(values):.2f}" + (f" ({statistics.stdev(values):.2f})" if len(values) > 1 else "")
    return f"**{text}**" if bold else text


def paired_differences(runs: Sequence[SeedRun], decode: str, focus: str, baseline: str,
                       group: Sequence[str], resamples: int = 1000) -> Tuple[Interval, List[str]]:
    """The focus model's macro WER minus the baseline's over ``group``, per seed: the interval
    over seeds, and per seed the utterance-bootstrap interval of the relative reduction."""
    differences, per_seed = [], []
    for run in runs:
        errors = run.errors[decode]
        differences.append(macro_wer(errors, focus, group) - macro_wer(errors, baseline, group))
        r = paired_bootstrap(errors, focus, baseline, group, resamples)
        per_seed.append(f"seed {run.seed}: {differences[-1]:+.2f} (reduction {r.reduction:+.1f}% "
                        f"[{r.low:+.1f}%, {r.high:+.1f}%])")
    return t_interval(differences), per_seed


def last_epoch_value(run: SeedRun, model: str, key: str = "loss_ctc", phase: str = "train") -> Optional[float]:
    """``phase``'s ``key`` at the last epoch: by default the training CTC loss (without the
    router losses)."""
    curve = run.curves.get(model)
    if not curve:
        return None
    return curve[max(curve)].get(phase, {}).get(key)


def baseline_models(runs: Sequence[SeedRun]) -> List[str]:
    """An ablation's models that are the baseline's runs (unchanged by it), sorted."""
    return sorted({m for r in runs for m in r.from_baseline})


def baseline_comparison(runs: Sequence[SeedRun], baseline_runs: Sequence[SeedRun], models: Sequence[str],
                        decode: str, sets: Sequence[str], in_domain: Sequence[str]) -> List[str]:
    """Markdown rows: per model the ablation changed, its value minus the baseline's of the
    same seed (mean with its 95% t interval over seeds) for the in-domain and out-of-domain
    average WER, the last epoch's training CTC loss and validation CER."""
    out_of_domain = [s for s in sets if s not in in_domain]
    measures = [("in-domain WER", lambda r, m: macro_wer(r.errors[decode], m, list(in_domain)) if in_domain else None),
                ("out-of-domain WER", lambda r, m: macro_wer(r.errors[decode], m, out_of_domain) if out_of_domain else None),
                ("training CTC loss", lambda r, m: last_epoch_value(r, m)),
                ("validation CER", lambda r, m: last_epoch_value(r, m, "cer_ctc", "valid"))]
    lines = ["| model | " + " | ".join(name for name, _ in measures) + " |",
             "| --- |" + " --- |" * len(measures)]
    unchanged = baseline_models(runs)
    for model in models:
        if model in unchanged:
            continue
        cells = []
        for _, measure in measures:
            pairs = [(measure(r, model), measure(b, model)) for r, b in zip(runs, baseline_runs)]
            if any(a is None or b is None for a, b in pairs):
                cells.append("n/a")
                continue
            cells.append(f"{t_interval([a - b for a, b in pairs])} (baseline {statistics.fmean(b for _, b in pairs):.3g})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def draw_learning_curves(runs: Sequence[SeedRun], models: Sequence[str], output: Path) -> Path:
    """learning_curves.png: training CTC loss and validation CER per epoch, mean over seeds
    with the band of their lowest and highest, the models in one figure (an ablation's
    unchanged models marked as the baseline's)."""
    from espnet_omni.extras import require_extra

    require_extra("matplotlib", "The study's learning curves")
    from matplotlib.figure import Figure

    import numpy as np

    unchanged = baseline_models(runs)  # labelled as the baseline's: trained without the change
    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    panels = fig.subplots(1, 2)
    for ax, (phase, key, label) in zip(panels, (("train", "loss_ctc", "training CTC loss"),
                                                ("valid", "cer_ctc", "validation CER (greedy CTC)"))):
        for model in models:
            curves = [r.curves.get(model, {}) for r in runs]
            epochs = sorted(set.intersection(*(set(c) for c in curves))) if all(curves) else []
            if not epochs:
                continue
            values = np.array([[c[e].get(phase, {}).get(key, np.nan) for e in epochs] for c in curves])
            line, = ax.plot(epochs, np.nanmean(values, 0), marker=".",
                            label=f"{model} (baseline)" if model in unchanged else model)
            ax.fill_between(epochs, np.nanmin(values, 0), np.nanmax(values, 0), alpha=0.2,
                            color=line.get_color())
        ax.set_xlabel("epoch")
        ax.set_title(f"{label}\n{len(runs)} seeds: mean, band from lowest to highest")
        ax.legend()
    panels[0].set_yscale("log")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    return output


def noise_routing_lines(runs: Sequence[SeedRun], models: Sequence[str], focus: str) -> List[str]:
    """Markdown: per MoE model and block, the share of frames whose expert changes when the same
    utterances are noisy (the routing analysis's noise pair), mean (sd) over seeds, and the focus
    model's mean share minus Switch's with its interval over seeds. Empty without noise pairs."""
    shares: Dict[str, List[dict]] = {}
    for model in models:
        pairs = [((r.routing or {}).get("models", {}).get(model, {}).get("noise") or [None])[0] for r in runs]
        if all(pairs):
            shares[model] = pairs
    if not shares:
        return []
    first = next(iter(shares.values()))[0]
    blocks = first["blocks"]
    lines = ["## Routing under noise", "",
             f"Share of frames (%) whose expert changes when the {first['utterances']} utterances of "
             f"{first['clean']} are heard as {first['noisy']}, per MoE block: mean (sd) over seeds.", "",
             "| model | " + " | ".join(f"block {b}" for b in blocks) + " | mean |",
             "| --- |" + " --- |" * (len(blocks) + 1)]
    for model, pairs in shares.items():
        cells = [_mean_sd([100 * p["changed"][i] for p in pairs]) for i in range(len(blocks))]
        cells.append(_mean_sd([100 * p["mean_changed"] for p in pairs], bold=True))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if focus in shares and "switch" in shares and focus != "switch":
        interval = t_interval([100 * (a["mean_changed"] - b["mean_changed"])
                               for a, b in zip(shares[focus], shares["switch"])])
        lines += ["", f"{focus} minus switch: {interval} points."]
    return lines


def study_report(runs: Sequence[SeedRun], models: Sequence[str], sets: Sequence[str],
                 in_domain: Sequence[str], focus: str, primary: str, curves_png: Optional[str] = None,
                 resamples: int = 1000, baseline_runs: Optional[Sequence[SeedRun]] = None,
                 title: Optional[str] = None) -> str:
    """REPORT.md: WER tables per decoding (mean and sd over seeds), the focus model's paired
    differences with intervals over seeds beside each seed's utterance bootstrap, the learning
    curves, and the claims table; for an ablation (``baseline_runs``, the baseline study's
    same seeds) first its changed models against the baseline's."""
    seeds = ", ".join(str(r.seed) for r in runs)
    out_of_domain = [s for s in sets if s not in in_domain] or list(sets)
    seed_word = "seeds" if len(runs) > 1 else "seed"
    lines = [f"# {title or 'The comparison'} over {len(runs)} training {seed_word} ({seeds})", ""]
    if baseline_runs is not None:
        shared = baseline_models(runs)
        lines += ["## Against the baseline", "",
                  f"Each changed model minus the baseline's trained with the same seed ({primary}): "
                  "mean over seeds with its 95% t interval, the baseline's mean in brackets."
                  + (f" {', '.join(shared)}: the baseline's own runs." if shared else ""), ""]
        lines += baseline_comparison(runs, baseline_runs, models, primary, sets, in_domain) + [""]
    for decode in complete_decodes(runs, models):
        lines += [f"## WER (%), {decode}" + (" (the recipe's decoding)" if decode == primary else ""), "",
                  "Mean over seeds (standard deviation).", ""]
        lines += wer_table(runs, decode, models, sets, in_domain) + [""]
    lines += [f"## Paired differences, {primary}", "",
              f"{focus}'s out-of-domain macro-average WER minus each model's, in points: mean over seeds "
              "with its 95% t interval over seeds; per seed, the relative reduction with its "
              f"utterance bootstrap interval ({resamples} resamples), which covers the test "
              "utterances only.", ""]
    claims = []
    for baseline in models:
        if baseline == focus:
            continue
        interval, per_seed = paired_differences(runs, primary, focus, baseline, out_of_domain, resamples)
        lines += [f"- vs {baseline}: {interval}; " + "; ".join(per_seed)]
        claims.append((f"lower out-of-domain WER than {baseline}", f"{interval} points", interval.verdict(True)))
    loss_claims = []
    for baseline in models:
        if baseline == focus:
            continue
        losses = [(last_epoch_value(r, focus), last_epoch_value(r, baseline)) for r in runs]
        if all(a is not None and b is not None for a, b in losses):
            interval = t_interval([a - b for a, b in losses])
            loss_claims.append((f"lower training loss (CTC, last epoch) than {baseline}",
                                f"{interval} per utterance", interval.verdict(True)))
    claims = loss_claims + claims
    nmis = []
    for r in runs:
        models_routing = (r.routing or {}).get("models", {})
        if focus in models_routing and "switch" in models_routing:
            nmis.append(models_routing[focus]["agreement"]["mean_offdiagonal"]["nmi"]
                        - models_routing["switch"]["agreement"]["mean_offdiagonal"]["nmi"])
    if len(nmis) == len(runs) and nmis:
        interval = t_interval(nmis)
        claims.append(("more consistent routing across layers than switch (NMI of layer pairs)",
                       f"{interval}", interval.verdict(False)))
    if curves_png:
        lines += ["", "## Learning curves", "", f"![learning curves]({curves_png})"]
    noise_lines = noise_routing_lines(runs, models, focus)
    if noise_lines:
        lines += [""] + noise_lines
    lines += ["", "## The paper's claims at this scale", "",
              "Holds: the 95% interval over seeds lies on the claimed side of 0; does not hold: on "
              "the other side; undecided: it contains 0.", "",
              "| claim | measured (focus minus other) | verdict |", "| --- | --- | --- |"]
    lines += [f"| {claim} | {measured} | {verdict} |" for claim, measured, verdict in claims]
    return "\n".join(lines) + "\n"


def make_study_report(study_dir: Path, seeds: Sequence[int],
                      models: Sequence[str] = ("dense_transformer", "switch", "omni_router"),
                      sets: Optional[Sequence[str]] = None, in_domain: Optional[Sequence[str]] = None,
                      focus: str = "omni_router", primary: Optional[str] = None, resamples: int = 1000,
                      baseline_dir: Optional[Path] = None) -> str:
    """Write ``study_dir``'s REPORT.md and learning_curves.png from its seeds (folders, else
    summaries), and a summary of each seed read from its folder; returns the report.

    ``sets`` and ``in_domain`` default to the columns of the first seed's RESULTS.md (or of its
    summary); ``primary``, the decoding of the paired differences, to the first with an LM and
    the averaged model. With ``baseline_dir`` (an ablation), a model missing from a seed's
    folder is the baseline's of that seed.

    Raises:
        FileNotFoundError: a seed (or the baseline's) has neither folder nor summary.
        ValueError: no decoding scored for every model and seed, or an unreadable summary.
    """
    study_dir = Path(study_dir)
    if sets is None or in_domain is None:
        results_md = study_dir / f"seed{seeds[0]}" / "RESULTS.md"
        summary = summary_path(study_dir, seeds[0])
        if results_md.exists():
            cols, _ = read_results_table(results_md.read_text())
            found_sets, found_in_domain = [c.set_id for c in cols], [c.set_id for c in cols if c.in_domain]
        elif summary.exists():
            _, found_sets, found_in_domain = read_seed_summary(summary)
        else:
            raise FileNotFoundError(f"{results_md}: missing (and {summary}); name the test sets and the "
                                    "in-domain ones (--sets, --in_domain)")
        sets = sets or found_sets
        in_domain = in_domain if in_domain is not None else found_in_domain
    runs, baseline_runs, from_folders = read_study(study_dir, seeds, models, sets, baseline_dir)
    decodes = complete_decodes(runs + (baseline_runs or []), models)
    if not decodes:
        raise ValueError(f"no decoding of {list(sets)} is scored for every model in every seed of "
                         f"{study_dir} (run run_study.sh to the end first)")
    primary = primary or next((d for d in decodes if "_lm_" in d and d.endswith(".ave")), decodes[0])
    if primary not in decodes:
        raise ValueError(f"decoding {primary}: not scored for every model and seed (have: {decodes})")
    curves = draw_learning_curves(runs, models, study_dir / "learning_curves.png")
    title = f"The ablation {study_dir.name}" if baseline_dir is not None else None
    report = study_report(runs, models, sets, in_domain, focus, primary, curves.name, resamples,
                          baseline_runs, title)
    write_text_whole(study_dir / "REPORT.md", report)
    for run in runs:
        if run.seed in from_folders:
            write_seed_summary(summary_path(study_dir, run.seed), run, sets, in_domain)
    return report
