"""Routing pictures drawn from a hand-made routing report."""

import copy
import struct
from pathlib import Path

import numpy as np
import pytest

from espnet_omni.analysis.routing_plots import markdown_links, path_file_name, write_pictures

NUM_EXPERTS, NUM_LAYERS, NUM_FRAMES = 4, 3, 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SUMMARY_FILES = ["routing_agreement.png", "routing_load.png", "routing_usage.png",
                 "routing_blank.png"]


def _usage(rng: np.random.Generator) -> list:
    counts = rng.random((NUM_LAYERS, NUM_EXPERTS)) + 0.1
    return (counts / counts.sum(axis=1, keepdims=True)).tolist()


def _agreement(rng: np.random.Generator) -> list:
    upper = np.triu(rng.random((NUM_LAYERS, NUM_LAYERS)), 1)
    return (upper + upper.T + np.eye(NUM_LAYERS)).tolist()


def _model_entry(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    blocks = [2, 4, 6]  # not 1..L, so block labels come from the report
    usage = _usage(rng)
    nmi, cramers_v = _agreement(rng), _agreement(rng)
    return {
        "encoder": "omni_router",
        "num_experts": NUM_EXPERTS,
        "moe_blocks": blocks,
        "agreement": {
            "nmi": nmi, "cramers_v": cramers_v, "uncertainty": nmi, "same_expert": nmi,
            "mean_offdiagonal": {"nmi": 0.42, "cramers_v": 0.37, "uncertainty": 0.4,
                                 "same_expert": 0.5},
        },
        "layers": [{"block": b, "entropy": 1.2, "load": load, "max_load": max(load),
                    "same_as_previous": None if i == 0 else 0.3, "distinct_paths": 7}
                   for i, (b, load) in enumerate(zip(blocks, usage))],
        "reference": {"name": "train", "frames": 1000, "usage": usage},
        "sets": {"dev": {"utterances": 5, "frames": 300, "usage": _usage(rng),
                         "js_divergence": [0.01, 0.02, 0.01], "mean_js_divergence": 0.013}},
        "ctc": {"blank_share": 0.61,
                "layers": [{"block": b, "blank_load": load, "token_load": load,
                            "blank_share_of_expert": rng.random(NUM_EXPERTS).tolist()}
                           for b, load in zip(blocks, usage)]},
        "example": {"set": "dev", "utterance": "spk1-dev00001",
                    "experts": rng.integers(0, NUM_EXPERTS, (NUM_FRAMES, NUM_LAYERS)).tolist(),
                    "blank": (rng.random(NUM_FRAMES) < 0.6).tolist()},
    }


def _report(*names: str) -> dict:
    return {"models": {name: _model_entry(seed) for seed, name in enumerate(names)}}


def _png_size(path: Path) -> tuple:
    """(width, height) from the IHDR chunk; fails unless ``path`` starts like a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, path
    assert head[12:16] == b"IHDR", path
    return struct.unpack(">II", head[16:24])


def _pixels(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)


def test_writes_every_picture_as_png(tmp_path):
    written = write_pictures(_report("switch", "omni_router"), tmp_path)

    expected = SUMMARY_FILES + ["routing_path_switch.png", "routing_path_omni_router.png"]
    assert [path.name for path in written] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)
    for path in written:
        width, height = _png_size(path)
        assert 300 <= width <= 2500 and 150 <= height <= 1500, (path.name, width, height)
        image = _pixels(path)
        assert image.shape[:2] == (height, width)
        # a picture with content, not a blank canvas
        assert image[..., :3].std() > 0.05, path.name


def test_width_grows_with_the_number_of_models(tmp_path):
    one = write_pictures(_report("switch"), tmp_path / "one")
    two = write_pictures(_report("switch", "omni_router"), tmp_path / "two")
    for name in ["routing_agreement.png", "routing_load.png", "routing_blank.png"]:
        width_one, _ = _png_size(tmp_path / "one" / name)
        width_two, _ = _png_size(tmp_path / "two" / name)
        assert width_two > width_one + 300, name
    # the usage picture stacks models in rows instead
    assert _png_size(two[2])[1] > _png_size(one[2])[1]


def test_path_picture_shows_the_example_path(tmp_path):
    report = _report("switch")
    same = copy.deepcopy(report)
    other = copy.deepcopy(report)
    experts = np.array(other["models"]["switch"]["example"]["experts"])
    other["models"]["switch"]["example"]["experts"] = ((experts + 1) % NUM_EXPERTS).tolist()

    first = _pixels(write_pictures(report, tmp_path / "a")[-1])
    again = _pixels(write_pictures(same, tmp_path / "b")[-1])
    changed = _pixels(write_pictures(other, tmp_path / "c")[-1])

    assert np.array_equal(first, again)  # drawing is deterministic, so a difference is the path
    assert first.shape == changed.shape
    assert not np.array_equal(first, changed)


def test_blank_strip_changes_with_ctc_blanks(tmp_path):
    report = _report("switch")
    other = copy.deepcopy(report)
    example = other["models"]["switch"]["example"]
    example["blank"] = [not b for b in example["blank"]]

    first = _pixels(write_pictures(report, tmp_path / "a")[-1])
    flipped = _pixels(write_pictures(other, tmp_path / "b")[-1])
    assert not np.array_equal(first, flipped)


def test_models_lacking_a_part_are_left_out(tmp_path):
    report = _report("switch", "omni_router")
    del report["models"]["switch"]["example"]
    report["models"]["omni_router"]["sets"] = {}

    written = write_pictures(report, tmp_path)

    names = [path.name for path in written]
    assert names == SUMMARY_FILES + ["routing_path_omni_router.png"]
    assert not (tmp_path / "routing_path_switch.png").exists()
    # only one model left in the usage picture: as tall as a one-model report's
    alone = write_pictures(_report("switch"), tmp_path / "alone")[2]
    assert _png_size(written[2]) == _png_size(alone)


def test_picture_without_any_model_is_not_written(tmp_path):
    report = _report("switch", "omni_router")
    for entry in report["models"].values():
        entry["sets"] = {}
        del entry["ctc"]
        del entry["example"]

    written = write_pictures(report, tmp_path)

    assert [path.name for path in written] == ["routing_agreement.png", "routing_load.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(path.name for path in written)


@pytest.mark.parametrize("report", [{"models": {}}, {}])
def test_empty_report_writes_nothing(tmp_path, report):
    out = tmp_path / "routing"
    assert write_pictures(report, out) == []
    assert not out.exists()


def test_mismatched_example_lengths_are_an_error(tmp_path):
    report = _report("switch")
    report["models"]["switch"]["example"]["blank"] = [True] * (NUM_FRAMES - 1)
    with pytest.raises(ValueError, match="19 of CTC blanks"):
        write_pictures(report, tmp_path)


def test_path_file_name_is_safe():
    assert path_file_name("omni_router") == "routing_path_omni_router.png"
    assert path_file_name("exp/switch e4") == "routing_path_exp_switch_e4.png"


def test_markdown_links(tmp_path):
    pictures = [tmp_path / "routing" / "routing_agreement.png",
                tmp_path / "routing" / "routing_path_switch.png"]
    assert markdown_links(pictures, tmp_path) == (
        "- [routing_agreement.png](routing/routing_agreement.png)\n"
        "- [routing_path_switch.png](routing/routing_path_switch.png)"
    )
    assert markdown_links(pictures[:1], tmp_path / "other") == (
        "- [routing_agreement.png](../routing/routing_agreement.png)"
    )
    assert markdown_links([], tmp_path) == ""
