"""Run divergence: replayed trainings in fresh processes, identical when nothing differs, apart
when the seed does; the comparison's measures on constructed runs."""

import torch

from espnet_omni.analysis.run_divergence import compare, divergence_markdown, measure

from conftest import CONF


def test_compare_measures_losses_parameters_and_rerouted_frames():
    reference = {"losses": [5.0, 3.0], "initial": torch.zeros(4), "final": torch.tensor([2.0, 0.0, 0.0, 0.0]),
                 "routes": torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])}
    run = {"losses": [5.5, 2.0], "initial": torch.zeros(4), "final": torch.tensor([2.0, 1.0, 0.0, 0.0]),
           "routes": torch.tensor([[0, 1, 2, 0], [1, 1, 2, 3]])}  # frames 0 and 3 differ in some block
    d = compare(run, reference, "x")
    assert (d.first_loss_diff, d.last_loss_diff, d.param_distance, d.rerouted) == (0.5, 1.0, 0.5, 0.5)
    dense = compare({**run, "routes": None}, {**reference, "routes": None}, "x")
    assert dense.rerouted is None
    assert "| m | x | 0.5 | 1 | 0.5 | – |" in divergence_markdown({"m": [dense]}, 2)


def test_replays_agree_bit_for_bit_and_another_seed_does_not(tmp_path):
    results = measure([CONF / "tiny" / "omni_router.yaml"], 2, tmp_path, ["reference", "reference again", "seed 1"])
    again, seed1 = results["omni_router"]
    assert (again.first_loss_diff, again.last_loss_diff, again.param_distance, again.rerouted) == (0, 0, 0, 0)
    assert seed1.first_loss_diff > 0 and seed1.param_distance > 1 and seed1.rerouted > 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "omni_router.reference.pt", "omni_router.reference_again.pt", "omni_router.seed_1.pt"]
