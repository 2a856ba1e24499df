"""analyze_routing on tiny models and a tiny data dir: the command, a packed model, the routing
of a padded batch, the noisy copy it compares with, and its errors."""

import json
import shutil
import zipfile

import numpy as np
import pytest
import soundfile
import torch

import espnet_omni  # noqa: F401
from espnet_omni.analysis.routing_capture import (
    RoutingAnalysisError,
    analyze,
    load_data_set,
    route_batch,
)
from espnet_omni.data.kaldi_segments import SegmentsError
from espnet_omni.recipe.packed_model import ModelSourceError
from espnet_omni.recipe.results import replace_section
from espnet_omni.synth.noisy_copy import write_noisy_copy

from conftest import make_untrained_experiment, run_module, write_tone_token_list

MODELS = ("switch", "omni_router", "dense_transformer")


@pytest.fixture(scope="module")
def experiments(tone_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("routing")
    tokens = write_tone_token_list(root / "tokens.txt")
    exps = {name: make_untrained_experiment(root / "exp", name, tokens) for name in MODELS}
    noisy = root / "dev_noisy"
    write_noisy_copy(tone_corpus["dev"], noisy, snr_db=0.0)
    return root, exps, noisy


@pytest.mark.timeout(600)
def test_command_writes_routing_json_pictures_and_results_section(experiments, tone_corpus):
    root, exps, noisy = experiments
    results = root / "RESULTS.md"
    results.write_text("# Results\n\n| model | test |\n\n## Routing\n\nold numbers\n")
    run_module(
        "espnet_omni.bin.analyze_routing", *[a for m in MODELS for a in ("--model", str(exps[m]))],
        "--data_dir", f"dev={tone_corpus['dev']}", "--reference_dir", f"train={tone_corpus['train']}",
        "--noise_pair", str(tone_corpus["dev"]), str(noisy), "--example_utt", "dvspk1-0004",
        "--output_dir", "routing", "--results", str(results), "--batch_size", "3", cwd=root,
    )
    report = json.loads((root / "routing" / "routing.json").read_text())
    assert list(report["models"]) == ["switch", "omni_router"]
    assert report["skipped"] == {"dense_transformer": "dense_transformer encoder: no MoE block"}
    omni, switch = report["models"]["omni_router"], report["models"]["switch"]
    assert omni["shared_router"] and not switch["shared_router"]
    dev_keys = [line.split()[0] for line in (tone_corpus["dev"] / "wav.scp").read_text().splitlines()]
    for entry in (omni, switch):
        assert entry["utterances"] == len(dev_keys) == entry["sets"]["dev"]["utterances"]
        assert entry["moe_blocks"] == [1, 2] and entry["num_experts"] == 4
        for name in ("nmi", "cramers_v", "uncertainty", "same_expert"):
            matrix = np.array(entry["agreement"][name])
            assert matrix.shape == (2, 2) and (np.diag(matrix) == 1).all()
            assert ((0 <= matrix) & (matrix <= 1)).all()
        assert sum(entry["layers"][0]["load"]) == pytest.approx(1, abs=1e-3)
        assert entry["reference"] == {**entry["reference"], "name": "train"}
        assert entry["reference"]["frames"] > entry["frames"]  # 48 training utterances vs 8
        assert set(entry["speakers"]["dev"]) == {"dvspk0", "dvspk1", "dvspk2"}
        assert sum(s["frames"] for s in entry["speakers"]["dev"].values()) == entry["frames"]
        noise = entry["noise"][0]
        assert noise["utterances"] == len(dev_keys) and noise["length_mismatches"] == 0
        assert noise["frames"] == entry["frames"]
        example = entry["example"]
        assert example["utterance"] == "dvspk1-0004" and len(example["experts"][0]) == 2
        assert len(example["experts"]) == len(example["blank"])
    # One router: a frame whose hidden state barely changes keeps its expert id; the measure
    # of label matching is far higher than for two independent routers.
    assert omni["agreement"]["same_expert"][0][1] > switch["agreement"]["same_expert"][0][1]
    pictures = {p.name for p in (root / "routing").glob("*.png")}
    assert pictures == {"routing_agreement.png", "routing_load.png", "routing_usage.png", "routing_blank.png",
                        "routing_path_switch.png", "routing_path_omni_router.png"}
    text = results.read_text()
    assert text.startswith("# Results\n\n| model | test |\n") and "old numbers" not in text
    assert text.count("## Routing") == 1 and "| omni_router | 2 x 4 |" in text
    assert "(routing/routing_agreement.png)" in text and "[routing.json](routing/routing.json)" in text


@pytest.mark.timeout(600)
def test_a_packed_model_gives_the_routing_of_its_experiment_folder(experiments, tone_corpus):
    root, exps, _ = experiments
    run_module("espnet2.bin.pack", "asr", "--asr_train_config", str(exps["omni_router"] / "config.yaml"),
               "--asr_model_file", str(exps["omni_router"] / "valid.cer_ctc.best.pth"),
               "--outpath", "asr_omni_router.zip", cwd=root)
    with zipfile.ZipFile(root / "asr_omni_router.zip") as archive:
        assert any(name.endswith("config.yaml") for name in archive.namelist())
    dev = [str(tone_corpus["dev"])]
    from_folder = analyze([str(exps["omni_router"])], dev, work_dir=root)
    from_zip = analyze([str(root / "asr_omni_router.zip")], dev, work_dir=root)
    folder, packed = from_folder["models"]["omni_router"], from_zip["models"]["omni_router"]
    assert packed["model"].endswith("asr_omni_router.zip")
    for key in ("agreement", "layers", "paths", "sets", "ctc", "example"):
        assert packed[key] == folder[key], key


def test_padding_does_not_change_an_utterances_routing(experiments, tone_corpus):
    """An utterance routed alone and padded in a batch with a longer one: the same experts."""
    from espnet2.tasks.asr import ASRTask

    _, exps, _ = experiments
    model, _ = ASRTask.build_model_from_file(
        str(exps["switch"] / "config.yaml"), str(exps["switch"] / "valid.cer_ctc.best.pth"), "cpu")
    model.eval()
    paths = [line.split()[1] for line in (tone_corpus["dev"] / "wav.scp").read_text().splitlines()]
    waves = sorted((soundfile.read(p, dtype="float32")[0] for p in paths), key=len)
    short, long = torch.from_numpy(waves[0]), torch.from_numpy(waves[-1])
    alone = route_batch(model, ["short"], short[None], torch.tensor([short.numel()]))
    padded = torch.zeros(2, long.numel())
    padded[0], padded[1, : short.numel()] = long, short
    both = route_batch(model, ["long", "short"], padded, torch.tensor([long.numel(), short.numel()]))
    first = int(both.lengths[0])
    assert both.lengths[1] == alone.lengths[0] < first
    assert both.experts.shape[1] == first + alone.lengths[0]
    np.testing.assert_array_equal(both.experts[:, first:], alone.experts)
    np.testing.assert_array_equal(both.blank[first:], alone.blank)
    # ESPnet's STFT sees the batch's zero padding past the short utterance's end where, alone,
    # it pads by reflection: the last frames' features, so probabilities, differ slightly.
    np.testing.assert_allclose(both.chosen_prob[:, first:], alone.chosen_prob, atol=5e-3)


def test_noisy_copy_keeps_ids_lengths_and_reaches_its_snr(experiments, tone_corpus):
    _, _, noisy = experiments
    dev = tone_corpus["dev"]
    clean = dict(line.split() for line in (dev / "wav.scp").read_text().splitlines())
    copy = dict(line.split() for line in (noisy / "wav.scp").read_text().splitlines())
    assert list(copy) == list(clean)
    for table in ("text", "utt2spk", "spk2utt"):
        assert (noisy / table).read_text() == (dev / table).read_text()
    for key in clean:
        x, rate = soundfile.read(clean[key])
        y, noisy_rate = soundfile.read(copy[key])
        assert noisy_rate == rate and y.shape == x.shape
        gain = np.dot(y, x) / np.dot(x, x)  # the copy may be scaled down against clipping
        residual = y - gain * x
        snr = 10 * np.log10(np.mean((gain * x) ** 2) / np.mean(residual**2))
        assert snr == pytest.approx(0.0, abs=0.5), key


def test_noisy_copy_of_a_command_wav_scp_fails_naming_the_line_and_keeps_the_old_copy(tmp_path, tone_corpus):
    src = tmp_path / "src"
    shutil.copytree(tone_corpus["dev"], src)
    lines = (src / "wav.scp").read_text().splitlines()
    key = lines[2].split()[0]
    lines[2] = f"{key} sox in.wav -t wav - |"
    (src / "wav.scp").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "wav.scp").write_text("previous copy\n")
    with pytest.raises(SegmentsError, match=rf"{src / 'wav.scp'}:3:"):
        write_noisy_copy(src, out, snr_db=5)
    assert (out / "wav.scp").read_text() == "previous copy\n"


def test_bad_models_and_data_dirs_are_named(experiments, tone_corpus, tmp_path):
    root, exps, _ = experiments
    dev = str(tone_corpus["dev"])
    with pytest.raises(ModelSourceError, match=r"none of \['valid.ave.pth'\] exists .*valid.cer_ctc.best.pth"):
        analyze([str(exps["switch"])], [dev], model_file="valid.ave.pth")
    with pytest.raises(RoutingAnalysisError, match="not a data dir"):
        analyze([str(exps["switch"])], [str(tmp_path)])
    with pytest.raises(ModelSourceError, match="no such packed model"):
        analyze([str(tmp_path / "asr_missing.zip")], [dev])
    with pytest.raises(RoutingAnalysisError, match="data dirs share a name"):
        analyze([str(exps["switch"])], [dev, dev])
    other = tmp_path / "other"
    shutil.copytree(tone_corpus["dev"], other)
    renamed = "".join("x" + line for line in (other / "wav.scp").read_text().splitlines(True))
    (other / "wav.scp").write_text(renamed)
    for table in ("text", "utt2spk", "spk2utt"):
        (other / table).unlink()
    with pytest.raises(RoutingAnalysisError, match="no utterance id in common"):
        analyze([str(exps["switch"])], [dev], noise_pair_specs=[(dev, str(other))])


def test_subsets_are_drawn_reproducibly_in_the_dirs_order(tone_corpus):
    full = load_data_set(str(tone_corpus["train"]))
    first, second = (load_data_set(f"tr={tone_corpus['train']}", max_utts=10) for _ in range(2))
    assert first.keys == second.keys and len(first.keys) == 10 and first.name == "tr"
    assert first.keys == [k for k in full.keys if k in set(first.keys)]
    assert set(first.speakers) == set(first.keys)


def test_routing_section_is_replaced_or_appended():
    body = "new\n"
    assert replace_section("# R\n\ntable\n", "Routing", body) == "# R\n\ntable\n\n## Routing\n\nnew\n"
    text = "# R\n\n## Routing\n\nold\n\n## Later\n\nkept\n"
    assert replace_section(text, "Routing", body) == "# R\n\n## Routing\n\nnew\n\n## Later\n\nkept\n"
    assert replace_section("", "Routing", body) == "## Routing\n\nnew\n"
