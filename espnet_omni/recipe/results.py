"""Results table: WER per model and test set (the benchmark sets as columns in the order of
the paper's table), utterances scored per set, macro averages, and relative WER reductions of
one model against the others with paired-bootstrap 95% confidence intervals.

The paired bootstrap resamples utterances (with replacement, the same draw for every model)
independently within each test set, recomputes each set's WER and the macro average, and
reads the 2.5th and 97.5th percentiles of the relative reduction
``100 * (WER_other - WER_model) / WER_other``.

The routing section (:func:`routing_markdown`) summarises ``analyze_routing``'s routing.json
and links its pictures.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from espnet_omni.analysis.routing_plots import markdown_links
from espnet_omni.corpora.test_sets import TEST_SETS
from espnet_omni.recipe.scoring import UttErrors, wer

# errors[model][test_set] -> per-utterance counts, sorted by utterance id
Errors = Dict[str, Dict[str, List[UttErrors]]]


@dataclass
class Reduction:
    model: str
    baseline: str
    sets: Tuple[str, ...]
    reduction: float  # percent
    low: float
    high: float


def macro_wer(errors: Errors, model: str, sets: Sequence[str]) -> float:
    return float(np.mean([wer(errors[model][s]) for s in sets]))


def _arrays(errors: Errors, models: Sequence[str], test_set: str):
    ids = [e.utt_id for e in errors[models[0]][test_set]]
    for m in models[1:]:
        if [e.utt_id for e in errors[m][test_set]] != ids:
            raise ValueError(f"{test_set}: models {models[0]} and {m} were scored on different utterances")
    words = np.array([e.ref_words for e in errors[models[0]][test_set]], dtype=np.float64)
    errs = np.stack([[e.errors for e in errors[m][test_set]] for m in models]).astype(np.float64)
    return words, errs


def paired_bootstrap(
    errors: Errors, model: str, baseline: str, sets: Sequence[str],
    resamples: int = 1000, seed: int = 0,
) -> Reduction:
    """Relative macro-average WER reduction of ``model`` vs ``baseline`` with a 95% CI."""
    rng = np.random.default_rng(seed)
    per_set = []
    for test_set in sets:
        words, errs = _arrays(errors, [model, baseline], test_set)
        draw = rng.integers(0, words.size, size=(resamples, words.size))
        total_words = np.maximum(words[draw].sum(1), 1.0)
        per_set.append(errs[:, draw].sum(2) / total_words)  # (2, resamples)
    macro = np.mean(per_set, axis=0)
    relative = 100.0 * (macro[1] - macro[0]) / np.maximum(macro[1], 1e-12)
    point_model, point_base = macro_wer(errors, model, sets), macro_wer(errors, baseline, sets)
    point = 100.0 * (point_base - point_model) / point_base if point_base > 0 else 0.0
    low, high = np.percentile(relative, [2.5, 97.5])
    return Reduction(model, baseline, tuple(sets), point, float(low), float(high))


@dataclass
class Column:
    """A test-set column of a RESULTS.md table."""

    set_id: str
    label: str
    in_domain: bool


def read_results_table(results_md: str) -> Tuple[List[Column], Dict[str, List[Optional[float]]]]:
    """The test-set columns of a RESULTS.md WER table (averages left out) and each model's WER
    per column (None where not evaluated)."""
    by_label = {entry.label: name for name, entry in TEST_SETS.items()}
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in results_md.splitlines() if line.startswith("| ")]
    header = next((r for r in rows if r[0] == "model"), None)
    if header is None:
        return [], {}
    keep = [i for i, label in enumerate(header[1:], start=1) if "average" not in label]
    cols = []
    for i in keep:
        label = header[i].replace(" (in-domain)", "")
        cols.append(Column(by_label.get(label, label), label, header[i].endswith("(in-domain)")))
    table = {}
    for row in rows:
        if row[0] in ("model", "---", "utterances") or len(row) != len(header):
            continue
        table[row[0]] = [float(row[i].strip("*")) if re.fullmatch(r"\d+(\.\d+)?", row[i].strip("*")) else None
                         for i in keep]
    return cols, table


def columns(sets: Sequence[str]) -> List[str]:
    """Table columns: with any benchmark test set among ``sets``, all of them in the paper's
    order (those not evaluated stay as empty columns), then the other sets as given."""
    if not any(s in TEST_SETS for s in sets):
        return list(sets)
    return list(TEST_SETS) + [s for s in sets if s not in TEST_SETS]


def results_markdown(
    errors: Errors,
    models: Sequence[str],
    sets: Sequence[str],
    in_domain: Sequence[str] = (),
    focus: Optional[str] = None,
    resamples: int = 1000,
    header: str = "",
) -> str:
    """The RESULTS.md body: WER per model and test set, the utterances scored per set, macro
    averages, and, for ``focus``, its relative reductions with confidence intervals."""
    out_of_domain = [s for s in sets if s not in in_domain]
    cols = columns(sets)
    averages = [("average", list(sets))]
    if in_domain and out_of_domain:
        averages.insert(0, ("out-of-domain average", out_of_domain))

    def label(test_set: str) -> str:
        name = TEST_SETS[test_set].label if test_set in TEST_SETS else test_set
        return name + (" (in-domain)" if test_set in in_domain else "")

    def count(group: Sequence[str]) -> str:
        return f"{len(group)} set" + "s" * (len(group) != 1)

    def row(first: str, cells: Sequence[str]) -> str:
        return "| " + " | ".join([first, *cells]) + " |"

    lines = [header] if header else []
    lines += [
        row("model", [label(s) for s in cols] + [f"{name} ({count(group)})" for name, group in averages]),
        row("---", ["---"] * (len(cols) + len(averages))),
        row("utterances", [str(len(errors[models[0]][s])) if s in sets else "-" for s in cols] + [""] * len(averages)),
    ]
    for m in models:
        cells = [f"{wer(errors[m][s]):.1f}" if s in sets else "-" for s in cols]
        lines.append(row(m, cells + [f"**{macro_wer(errors, m, group):.2f}**" for _, group in averages]))
    missing = [label(s) for s in cols if s not in sets]
    if missing:
        lines += ["", f"Not evaluated: {', '.join(missing)}."]
    if focus is not None and len(models) > 1:
        group = out_of_domain or list(sets)
        over = count(group).replace(" ", " out-of-domain ") if out_of_domain else count(group)
        lines += [
            "",
            f"Relative reduction of the macro-average WER over the {over} by **{focus}** (95% confidence "
            f"interval: paired bootstrap over utterances, {resamples} resamples):",
            "",
            "| vs | WER reduction | 95% CI |",
            "| --- | --- | --- |",
        ]
        for baseline in models:
            if baseline == focus:
                continue
            r = paired_bootstrap(errors, focus, baseline, group, resamples)
            lines.append(f"| {baseline} | {r.reduction:+.1f}% | [{r.low:+.1f}%, {r.high:+.1f}%] |")
    return "\n".join(lines) + "\n"


def _cell(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def routing_markdown(report: dict, pictures: Sequence[Path], results_dir: Path, routing_json: Path) -> str:
    """The body of RESULTS.md's routing section: per MoE model the mean off-diagonal agreement
    of its layers' expert choices (NMI and Cramer's V), the share of frames that keep the
    previous layer's expert id, router entropy, load balance, specialisation by set, blank
    frames, routing change under noise; then links to the pictures."""

    def link(path: Path) -> str:
        return f"[{path.name}]({os.path.relpath(path, results_dir)})"

    lines = [
        f"From {link(routing_json)} (`espnet_omni.bin.analyze_routing`; measures: docs/routing.md "
        "of espnet-omni). Agreement: mean over pairs of distinct MoE layers; entropy: router "
        "entropy / log E; balance: entropy of the load / log E (1 = even); JS: mean "
        "Jensen-Shannon divergence of a set's expert usage from the reference's.",
        "",
        "| model | layers x experts | NMI | Cramer's V | same id as previous layer | entropy "
        "| balance | busiest expert | distinct paths | sets' JS from reference | expert change under noise |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in report["models"].items():
        layers = entry["layers"]
        mean = entry["agreement"]["mean_offdiagonal"]
        same = [layer["same_as_previous"] for layer in layers[1:]]
        js = [s["mean_js_divergence"] for s in entry["sets"].values()]
        noise = [pair["mean_changed"] for pair in entry.get("noise", [])]
        lines.append("| " + " | ".join([
            name,
            f"{len(layers)} x {entry['num_experts']}",
            _cell(mean["nmi"]),
            _cell(mean["cramers_v"]),
            _cell(sum(same) / len(same)) if same else "-",
            _cell(sum(layer["entropy"] for layer in layers) / len(layers)),
            _cell(sum(layer["load_balance"] for layer in layers) / len(layers)),
            _cell(max(layer["max_load"] for layer in layers)),
            f"{entry['paths']['distinct']}{'' if entry['paths']['complete'] else '+'}",
            f"{min(js):.3f}-{max(js):.3f}" if js else "-",
            _cell(sum(noise) / len(noise)) if noise else "-",
        ]) + " |")
    for name, why in report.get("skipped", {}).items():
        lines.append(f"| {name} | {why} |" + " |" * 9)
    if pictures:
        lines += ["", "Pictures:", "", markdown_links(pictures, results_dir)]
    return "\n".join(lines) + "\n"


def replace_section(text: str, heading: str, body: str) -> str:
    """``text`` with its ``## heading`` section (up to the next ``## `` heading) replaced by
    ``body``, or the section appended when there is none."""
    section = f"## {heading}\n\n{body}"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
