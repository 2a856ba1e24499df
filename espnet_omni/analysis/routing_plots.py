"""PNG pictures of the routing report (the dict written as ``routing.json``).

:func:`write_pictures` draws, for the models of ``report["models"]`` side by side in the
order of the dict:

* ``routing_agreement.png``: per model, the L x L ``agreement.nmi`` (top) and
  ``agreement.cramers_v`` (bottom) matrices between MoE layers, scale [0, 1];
* ``routing_load.png``: per model, layers x experts, the share of each layer's frames sent to
  each expert (``layers[i].load``), scale [0, max over models];
* ``routing_usage.png``: per model (one row each), sets (reference first) x (layer, expert)
  pairs flattened layer-major, the usage of every set;
* ``routing_blank.png``: per model, layers x experts, the share of an expert's frames that
  greedy CTC labels blank (``ctc.layers[i].blank_share_of_expert``), scale [0, 1];
* ``routing_path_<model>.png``: per model with an ``example``, the expert of every frame in
  every MoE layer of one utterance, under a strip of its CTC blank frames.

A model whose entry lacks the part a picture needs is left out of it; a picture without any
model is not written. Figures are :class:`matplotlib.figure.Figure` objects saved directly,
so pyplot's global state is never touched.
"""

import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from espnet_omni.extras import require_extra

PURPOSE = "Routing pictures (espnet_omni.bin.analyze_routing)"
DPI = 100
WIDTH_PER_MODEL = 4.5  # inches
# cells are annotated with their value up to this many rows / columns
MAX_ANNOTATED_LAYERS = 12
MAX_ANNOTATED_EXPERTS = 16
HEATMAP_CMAP = "viridis"
FILE_NAMES = {
    "agreement": "routing_agreement.png",
    "load": "routing_load.png",
    "usage": "routing_usage.png",
    "blank": "routing_blank.png",
}


def _figure_class():
    """matplotlib's ``Figure`` class (raises ``MissingExtraError`` without matplotlib)."""
    require_extra("matplotlib", PURPOSE)
    from matplotlib.figure import Figure

    return Figure


def _matrix(values: Any) -> np.ndarray:
    """A nested list of numbers as a float array (``None`` becomes NaN)."""
    return np.array(values if values is not None else [], dtype=float)


def _blocks(entry: Dict[str, Any], num_layers: int) -> List[int]:
    """The MoE block numbers of ``entry``'s L layers (1..L when the report has none)."""
    blocks = list(entry.get("moe_blocks") or [])
    return blocks if len(blocks) == num_layers else list(range(1, num_layers + 1))


def _num_experts(entry: Dict[str, Any], fallback: int) -> int:
    return int(entry.get("num_experts") or fallback)


def _save(fig, output_dir: Path, name: str) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / name
    fig.savefig(path, dpi=DPI)
    return path


def _annotate(ax, values: np.ndarray, vmin: float, vmax: float, fontsize: float = 8) -> None:
    """Write every cell's value (2 decimals) on an imshow of ``values`` (rows x cols)."""
    span = vmax - vmin if vmax > vmin else 1.0
    for (row, col), value in np.ndenumerate(values):
        if np.isnan(value):
            text, colour = "-", "black"
        else:
            # viridis is dark at the bottom of its scale: white text there, black above
            text = f"{value:.2f}"
            colour = "white" if (value - vmin) / span < 0.55 else "black"
        ax.text(col, row, text, ha="center", va="center", fontsize=fontsize, color=colour)


def _layer_heatmap(ax, values: np.ndarray, blocks: Sequence[int], vmin: float, vmax: float):
    """Draw ``values`` (L x E, layers x experts) with block numbers on the y axis."""
    image = ax.imshow(values, cmap=HEATMAP_CMAP, vmin=vmin, vmax=vmax, aspect="auto",
                      interpolation="nearest")
    num_layers, num_experts = values.shape
    ax.set_yticks(range(num_layers), [str(b) for b in blocks])
    ax.set_xticks(range(num_experts))
    ax.set_ylabel("MoE block")
    ax.set_xlabel("expert")
    if num_layers <= MAX_ANNOTATED_LAYERS and num_experts <= MAX_ANNOTATED_EXPERTS:
        _annotate(ax, values, vmin, vmax, fontsize=7 if num_experts > 8 else 8)
    return image


def _agreement_picture(models: Dict[str, Any], output_dir: Path) -> Optional[Path]:
    drawn: List[Tuple[str, Dict[str, Any], np.ndarray, np.ndarray]] = []
    for name, entry in models.items():
        agreement = entry.get("agreement") or {}
        nmi, cramers_v = _matrix(agreement.get("nmi")), _matrix(agreement.get("cramers_v"))
        if nmi.ndim == 2 and nmi.size and cramers_v.shape == nmi.shape:
            drawn.append((name, entry, nmi, cramers_v))
    if not drawn:
        return None
    Figure = _figure_class()
    fig = Figure(figsize=(WIDTH_PER_MODEL * len(drawn) + 1.0, 8.0), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, len(drawn), squeeze=False)
    for row, (key, label) in enumerate((("nmi", "NMI"), ("cramers_v", "Cramér's V"))):
        image = None
        for col, (name, entry, nmi, cramers_v) in enumerate(drawn):
            ax = axes[row, col]
            values = nmi if key == "nmi" else cramers_v
            image = ax.imshow(values, cmap=HEATMAP_CMAP, vmin=0.0, vmax=1.0,
                              interpolation="nearest")
            blocks = [str(b) for b in _blocks(entry, values.shape[0])]
            ax.set_xticks(range(len(blocks)), blocks)
            ax.set_yticks(range(len(blocks)), blocks)
            ax.set_xlabel("MoE block")
            ax.set_ylabel("MoE block")
            mean = (entry["agreement"].get("mean_offdiagonal") or {}).get(key)
            mean_text = f"{mean:.2f}" if isinstance(mean, (int, float)) else "n/a"
            ax.set_title(f"{name}: {label} (mean off-diagonal {mean_text})", fontsize=10)
            if values.shape[0] <= MAX_ANNOTATED_LAYERS:
                _annotate(ax, values, 0.0, 1.0, fontsize=8 if values.shape[0] <= 8 else 6)
        fig.colorbar(image, ax=list(axes[row, :]), label=label, shrink=0.9)
    return _save(fig, output_dir, FILE_NAMES["agreement"])


def _layer_expert_picture(panels: List[Tuple[str, np.ndarray, List[int], str]], vmax: float,
                          colourbar_label: str, output_dir: Path, file_name: str) -> Path:
    """One heatmap per panel (title, L x E values, block numbers) side by side, scale [0, vmax]."""
    Figure = _figure_class()
    max_layers = max(values.shape[0] for _, values, _, _ in panels)
    height = min(12.0, max(3.5, 0.4 * max_layers + 2.0))
    fig = Figure(figsize=(WIDTH_PER_MODEL * len(panels) + 1.0, height), dpi=DPI,
                 layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, (_, values, blocks, title) in zip(axes, panels):
        image = _layer_heatmap(ax, values, blocks, 0.0, vmax)
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=list(axes), label=colourbar_label, shrink=0.9)
    return _save(fig, output_dir, file_name)


def _load_picture(models: Dict[str, Any], output_dir: Path) -> Optional[Path]:
    panels = []
    for name, entry in models.items():
        layers = entry.get("layers") or []
        if not layers or any(not layer.get("load") for layer in layers):
            continue
        load = _matrix([layer["load"] for layer in layers])
        if load.ndim != 2:
            continue
        blocks = [layer.get("block", b) for layer, b in zip(layers, _blocks(entry, len(layers)))]
        panels.append((name, load, blocks, f"{name}: expert load (share of layer's frames)"))
    if not panels:
        return None
    vmax = max(float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
               for _, values, _, _ in panels)
    return _layer_expert_picture(panels, vmax if vmax > 0 else 1.0, "share of frames",
                                 output_dir, FILE_NAMES["load"])


def _blank_picture(models: Dict[str, Any], output_dir: Path) -> Optional[Path]:
    panels = []
    for name, entry in models.items():
        ctc = entry.get("ctc") or {}
        layers = ctc.get("layers") or []
        if not layers or any(layer.get("blank_share_of_expert") is None for layer in layers):
            continue
        shares = _matrix([layer["blank_share_of_expert"] for layer in layers])
        if shares.ndim != 2 or not shares.size:
            continue
        blocks = [layer.get("block", b) for layer, b in zip(layers, _blocks(entry, len(layers)))]
        overall = ctc.get("blank_share")
        overall_text = f"{overall:.2f}" if isinstance(overall, (int, float)) else "n/a"
        title = f"{name}: blank share of expert's frames\n(blank frames overall {overall_text})"
        panels.append((name, shares, blocks, title))
    if not panels:
        return None
    return _layer_expert_picture(panels, 1.0, "share labelled blank", output_dir,
                                 FILE_NAMES["blank"])


def _usage_rows(entry: Dict[str, Any]) -> Optional[Tuple[List[str], np.ndarray]]:
    """Row labels and the (1 + S) x (L * E) usage matrix of ``entry`` (None when it has no sets)."""
    sets = entry.get("sets") or {}
    if not sets:
        return None
    labels, rows = [], []
    reference = entry.get("reference") or {}
    if reference.get("usage"):
        labels.append(f"{reference.get('name', 'reference')} (reference)")
        rows.append(_matrix(reference["usage"]).reshape(-1))
    for set_name, data in sets.items():
        if not data.get("usage"):
            continue
        js = data.get("mean_js_divergence")
        js_text = f"{js:.3f}" if isinstance(js, (int, float)) else "n/a"
        labels.append(f"{set_name} (JS {js_text})")
        rows.append(_matrix(data["usage"]).reshape(-1))
    if not rows or len({row.size for row in rows}) != 1 or not rows[0].size:
        return None
    return labels, np.stack(rows)


def _usage_picture(models: Dict[str, Any], output_dir: Path) -> Optional[Path]:
    drawn = []
    for name, entry in models.items():
        rows = _usage_rows(entry)
        if rows is not None:
            drawn.append((name, entry, *rows))
    if not drawn:
        return None
    Figure = _figure_class()
    max_columns = max(values.shape[1] for _, _, _, values in drawn)
    width = min(20.0, max(7.0, 0.12 * max_columns + 4.0))
    heights = [values.shape[0] + 1.5 for _, _, _, values in drawn]
    fig = Figure(figsize=(width, 0.45 * sum(heights) + 0.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(drawn), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    vmax = max(float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
               for _, _, _, values in drawn)
    vmax = vmax if vmax > 0 else 1.0
    image = None
    for ax, (name, entry, labels, values) in zip(axes, drawn):
        image = ax.imshow(values, cmap=HEATMAP_CMAP, vmin=0.0, vmax=vmax, aspect="auto",
                          interpolation="nearest")
        first_layer = (entry.get("layers") or [{}])[0]
        num_experts = _num_experts(entry, len(first_layer.get("load") or []) or values.shape[1])
        if values.shape[1] % num_experts:
            num_experts = values.shape[1]  # inconsistent report: treat as one layer
        num_layers = values.shape[1] // num_experts
        # separators between layers, tick labels at each layer's centre
        for layer in range(1, num_layers):
            ax.axvline(layer * num_experts - 0.5, color="white", linewidth=1.0)
        blocks = _blocks(entry, num_layers)
        ax.set_xticks([layer * num_experts + (num_experts - 1) / 2 for layer in range(num_layers)],
                      [f"b{block}" for block in blocks])
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel(f"MoE block x expert ({num_experts} experts per block)")
        ax.set_title(f"{name}: expert usage per set", fontsize=10)
    fig.colorbar(image, ax=list(axes), label="share of layer's frames", shrink=0.9)
    return _save(fig, output_dir, FILE_NAMES["usage"])


def _expert_colours(num_experts: int):
    """A ListedColormap of ``num_experts`` distinct colours (qualitative while they last)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    if num_experts <= 10:
        colours = colormaps["tab10"].colors[:num_experts]
    elif num_experts <= 20:
        colours = colormaps["tab20"].colors[:num_experts]
    else:
        colours = colormaps["turbo"].resampled(num_experts)(np.arange(num_experts))
    return ListedColormap(colours)


def path_file_name(model: str) -> str:
    """File name of ``model``'s path picture (characters unsafe in a file name become '_')."""
    return f"routing_path_{re.sub(r'[^A-Za-z0-9._-]', '_', model)}.png"


def _path_picture(name: str, entry: Dict[str, Any], output_dir: Path) -> Optional[Path]:
    example = entry.get("example") or {}
    experts = np.array(example.get("experts") or [], dtype=int)  # T x L, frame-major
    if experts.ndim != 2 or not experts.size:
        return None
    num_frames, num_layers = experts.shape
    blank = example.get("blank")
    if blank is not None and len(blank) != num_frames:
        raise ValueError(f"{name}'s example has {num_frames} frames of experts but "
                         f"{len(blank)} of CTC blanks")
    num_experts = max(_num_experts(entry, 0), int(experts.max()) + 1)
    Figure = _figure_class()
    from matplotlib.ticker import MaxNLocator

    width = min(16.0, max(7.0, 0.06 * num_frames + 3.0))
    height = min(10.0, 0.3 * num_layers + 2.5)
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    if blank is not None:
        strip_ax, ax = fig.subplots(2, 1, sharex=True,
                                    gridspec_kw={"height_ratios": [1, max(3, num_layers)]})
        axes = [strip_ax, ax]
        # blank = light grey (0.75), token = black (0.0): a grey colormap with that scale
        strip = np.where(np.array(blank, dtype=bool), 0.75, 0.0)[None, :]
        strip_ax.imshow(strip, cmap="gray", vmin=0.0, vmax=1.0, aspect="auto",
                        interpolation="nearest")
        strip_ax.set_yticks([0], ["CTC"])
        strip_ax.tick_params(axis="x", labelbottom=False)
        strip_ax.set_title(f"{name}: {example.get('utterance', '?')} ({example.get('set', '?')})"
                           "\nCTC strip: grey = blank, black = token", fontsize=10)
    else:
        ax = fig.subplots(1, 1)
        axes = [ax]
        ax.set_title(f"{name}: {example.get('utterance', '?')} ({example.get('set', '?')})",
                     fontsize=10)
    cmap = _expert_colours(num_experts)
    image = ax.imshow(experts.T, cmap=cmap, vmin=-0.5, vmax=num_experts - 0.5, origin="lower",
                      aspect="auto", interpolation="nearest")
    blocks = _blocks(entry, num_layers)
    ax.set_yticks(range(num_layers), [str(b) for b in blocks])
    ax.set_ylabel("MoE block")
    ax.set_xlabel("encoder frame")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    step = max(1, num_experts // 16)  # keep the colourbar's labels legible for many experts
    colourbar = fig.colorbar(image, ax=axes, label="expert", shrink=0.9)
    colourbar.set_ticks(range(0, num_experts, step))
    return _save(fig, output_dir, path_file_name(name))


def write_pictures(report: dict, output_dir: Path) -> List[Path]:
    """Draw the routing pictures of every model of ``report`` into output_dir; returns the paths written.

    ``report`` is the dict of ``routing.json`` (``{"models": {name: entry}}``). Written, when at
    least one model has the data: ``routing_agreement.png``, ``routing_load.png``,
    ``routing_usage.png``, ``routing_blank.png`` and one ``routing_path_<model>.png`` per model
    with an ``example``, in that order. ``output_dir`` is created only when something is written.
    """
    output_dir = Path(output_dir)
    models: Dict[str, Any] = (report or {}).get("models") or {}
    written: List[Optional[Path]] = [
        _agreement_picture(models, output_dir),
        _load_picture(models, output_dir),
        _usage_picture(models, output_dir),
        _blank_picture(models, output_dir),
    ]
    written.extend(_path_picture(name, entry, output_dir) for name, entry in models.items())
    return [path for path in written if path is not None]


def markdown_links(pictures: Sequence[Path], relative_to: Path) -> str:
    """A markdown bullet list linking ``pictures``, paths relative to the folder ``relative_to``.

    E.g. ``- [routing_agreement.png](routing/routing_agreement.png)``, one line per picture.
    """
    lines = []
    for picture in pictures:
        target = Path(os.path.relpath(Path(picture), Path(relative_to))).as_posix()
        lines.append(f"- [{Path(picture).name}]({target})")
    return "\n".join(lines)
