"""The routing analysis's measures and counts on constructed expert assignments with known
answers, and its memory on long inputs."""

import tracemalloc

import numpy as np
import pytest

from espnet_omni.analysis.dependence import (
    cramers_v,
    js_divergence,
    nmi,
    same_expert_share,
    uncertainty_coefficient,
)
from espnet_omni.analysis.routing_counts import BatchRouting, NoisePairCounts, RoutingCounts

E = 4


def table(a, b, experts=E):
    """Contingency table of two layers' experts over the same frames."""
    joint = np.zeros((experts, experts))
    np.add.at(joint, (a, b), 1)
    return joint


@pytest.fixture
def choices():
    rng = np.random.default_rng(0)
    return rng.integers(0, E, 200_000), rng.integers(0, E, 200_000)


def test_identical_layers_agree_fully(choices):
    a, _ = choices
    for measure in (nmi, cramers_v, uncertainty_coefficient, same_expert_share):
        assert measure(table(a, a)) == pytest.approx(1.0)


def test_independent_layers_are_near_zero(choices):
    a, b = choices
    assert nmi(table(a, b)) < 1e-3
    assert cramers_v(table(a, b)) < 0.01
    assert uncertainty_coefficient(table(a, b)) < 1e-3
    assert same_expert_share(table(a, b)) == pytest.approx(1 / E, abs=0.01)


def test_relabelled_experts_agree_fully_for_both_label_free_measures(choices):
    a, _ = choices
    relabel = np.array([2, 0, 3, 1])  # no expert keeps its id
    joint = table(a, relabel[a])
    assert nmi(joint) == pytest.approx(1.0)
    assert cramers_v(joint) == pytest.approx(1.0)
    assert same_expert_share(joint) == 0.0  # the label-matching share sees no agreement


def test_a_function_of_the_previous_layer_is_predicted_one_way_only(choices):
    a, _ = choices
    merged = a // 2  # the later layer merges pairs of the earlier layer's experts
    joint = table(a, merged)
    assert uncertainty_coefficient(joint) == pytest.approx(1.0)  # earlier -> later: determined
    # later -> earlier: half of the earlier layer's 2 bits are left
    assert uncertainty_coefficient(joint.T) == pytest.approx(0.5, abs=0.01)
    assert nmi(joint) == pytest.approx(np.sqrt(0.5), abs=0.01)  # I / sqrt(2 bits * 1 bit)
    assert cramers_v(joint) == pytest.approx(1.0)  # every used cell of the smaller side


def test_degenerate_tables_give_zero_not_nan():
    one_expert = table(np.zeros(100, int), np.arange(100) % E)
    for measure in (nmi, cramers_v, uncertainty_coefficient):
        assert measure(one_expert) == 0.0
    assert nmi(np.zeros((E, E))) == 0.0


def test_js_divergence_bounds():
    assert js_divergence([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(0.0)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert 0 < js_divergence([0.5, 0.5], [0.9, 0.1]) < 1


def batch_of(experts, lengths, blank=None, keys=None):
    """BatchRouting of (L, N) experts split into utterances of ``lengths``."""
    layers, n = experts.shape
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(E), size=(layers, n))
    return BatchRouting(
        keys=keys or [f"u{i}" for i in range(len(lengths))],
        lengths=np.asarray(lengths),
        experts=experts,
        chosen_prob=np.take_along_axis(probs, experts[..., None], -1)[..., 0],
        entropy=-(probs * np.log(probs)).sum(-1),
        prob_sum=probs.sum(1),
        blank=np.zeros(n, bool) if blank is None else blank,
    )


def test_counts_match_a_direct_computation_across_batches_and_chunks():
    rng = np.random.default_rng(2)
    layers = 3
    batches = [rng.integers(0, E, (layers, n)) for n in (700, 1, 1300)]
    blanks = [rng.random(b.shape[1]) < 0.3 for b in batches]
    counts = RoutingCounts([2, 4, 6], E)
    counts.pair_chunk = 256  # counting pairs in chunks must not change the tables
    for ex, blank in zip(batches, blanks):
        counts.add("dev", batch_of(ex, [ex.shape[1]], blank))
    ex, blank = np.concatenate(batches, 1), np.concatenate(blanks)
    report = counts.report()

    assert report["frames"] == ex.shape[1] and report["moe_blocks"] == [2, 4, 6]
    for i in range(layers):
        for j in range(layers):
            np.testing.assert_array_equal(counts.pair_counts[i, j], table(ex[i], ex[j]))
            assert report["agreement"]["nmi"][i][j] == pytest.approx(nmi(table(ex[i], ex[j])), abs=1e-4)
        load = np.bincount(ex[i], minlength=E) / ex.shape[1]
        np.testing.assert_allclose(report["layers"][i]["load"], load, atol=1e-4)
        blank_share = [blank[ex[i] == e].mean() for e in range(E)]
        np.testing.assert_allclose(report["ctc"]["layers"][i]["blank_share_of_expert"], blank_share, atol=1e-4)
    assert report["layers"][0]["same_as_previous"] is None
    assert report["layers"][2]["same_as_previous"] == pytest.approx((ex[1] == ex[2]).mean(), abs=1e-4)
    prefixes = [len({tuple(col[:d]) for col in ex.T}) for d in (1, 2, 3)]
    assert [layer["distinct_paths"] for layer in report["layers"]] == prefixes
    assert report["paths"]["distinct"] == prefixes[-1] and report["paths"]["complete"]
    assert report["ctc"]["blank_share"] == pytest.approx(blank.mean(), abs=1e-4)


def test_sets_speakers_reference_and_example():
    layers = 2
    counts = RoutingCounts([1, 2], E, example_utt="b2")
    only_0 = np.zeros((layers, 10), int)
    only_3 = np.full((layers, 6), 3)
    counts.add_reference("train", batch_of(np.concatenate([only_0, only_3], 1), [16]))
    counts.add("a", batch_of(only_0, [4, 6], keys=["a1", "a2"]), speakers=["s1", "s2"])
    mixed = np.concatenate([only_0[:, :5], only_3[:, :5]], 1)
    mixed[1, 4] = 1
    counts.add("b", batch_of(mixed, [5, 5], keys=["b1", "b2"]), speakers=["s1", "s3"])
    report = counts.report()

    assert report["reference"]["name"] == "train" and report["reference"]["frames"] == 16
    assert report["sets"]["a"]["usage"] == [[1.0, 0, 0, 0]] * 2
    assert report["sets"]["a"]["utterances"] == 2 and report["sets"]["b"]["frames"] == 10
    # Set a uses expert 0 only, the reference 10/16 of the time.
    p, q = np.array([1.0, 0, 0, 0]), np.array([10, 0, 0, 6]) / 16
    assert report["sets"]["a"]["mean_js_divergence"] == pytest.approx(js_divergence(p, q), abs=1e-5)
    assert report["speakers"]["b"]["s3"]["usage"][0] == [0, 0, 0, 1.0]
    assert report["speakers"]["b"]["s1"]["usage"][1] == [0.8, 0.2, 0, 0]
    assert report["speakers"]["a"]["s2"]["frames"] == 6
    example = report["example"]
    assert example["utterance"] == "b2" and example["set"] == "b"
    assert example["experts"] == [[3, 3]] * 5  # T x L
    assert len(example["blank"]) == 5
    # The reference counts in nothing but itself.
    assert report["frames"] == 20 and report["utterances"] == 4


def test_without_a_reference_sets_are_compared_with_their_pooled_usage():
    counts = RoutingCounts([1], E)
    counts.add("a", batch_of(np.zeros((1, 4), int), [4]))
    counts.add("b", batch_of(np.full((1, 4), 2), [4]))
    report = counts.report()
    assert report["reference"]["name"] == "all sets"
    assert report["reference"]["usage"] == [[0.5, 0, 0.5, 0]]
    assert report["sets"]["a"]["mean_js_divergence"] == pytest.approx(js_divergence([1, 0], [0.5, 0.5]), abs=1e-5)


def test_paths_beyond_the_cap_are_counted_together():
    rng = np.random.default_rng(3)
    ex = rng.integers(0, E, (6, 5000))  # 4^6 = 4096 possible paths
    counts = RoutingCounts(list(range(1, 7)), E, max_paths=100)
    counts.add("dev", batch_of(ex, [5000]))
    paths = counts.report()["paths"]
    assert paths["distinct"] == 100 and not paths["complete"]
    listed = sum(counts.paths.values())
    assert paths["unlisted_frames"] == 5000 - listed > 0


def test_noise_pairs_count_changed_frames_per_layer():
    pair = NoisePairCounts([1, 2], E)
    clean = np.array([[0, 1, 2, 3], [0, 0, 0, 0]])
    noisy = np.array([[0, 1, 2, 0], [1, 1, 0, 0]])
    pair.add(clean, noisy)
    pair.add(clean[:, :2], noisy[:, :3])  # lengths differ: the first two frames compared
    report = pair.report("dev", "dev_noisy")
    assert report["frames"] == 6 and report["utterances"] == 2 and report["length_mismatches"] == 1
    assert report["changed"] == [pytest.approx(1 / 6, abs=1e-4), pytest.approx(4 / 6, abs=1e-4)]


def state_bytes(counts: RoutingCounts) -> int:
    arrays = [v for v in vars(counts).values() if isinstance(v, np.ndarray)]
    arrays += [u for u in counts.set_usage.values()]
    return sum(a.nbytes for a in arrays) + sum(len(k) + 8 for k in counts.paths)


def test_memory_stays_bounded_on_a_long_input():
    """The counts do not grow with the frames seen, and a batch of 300k frames is counted in a
    few times its own size (pairs of layers are counted in chunks, not all at once)."""
    rng = np.random.default_rng(4)
    layers, experts = 12, 8
    counts = RoutingCounts(list(range(1, layers + 1)), experts, max_paths=1000)
    ex = rng.integers(0, experts, (layers, 300_000))
    batch = batch_of(np.zeros((layers, 1), int), [1])
    batch.experts, batch.lengths, batch.blank = ex, np.array([300_000]), np.zeros(300_000, bool)
    batch.chosen_prob = batch.entropy = np.zeros((layers, 300_000))
    batch.prob_sum = np.zeros((layers, experts))
    counts.add("dev", batch)
    after_one = state_bytes(counts)
    tracemalloc.start()
    for _ in range(3):
        counts.add("dev", batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert state_bytes(counts) == after_one
    assert counts.frames == 4 * 300_000
    # Counting every pair of the 12 layers at once would take 78 x 8 bytes per frame.
    assert peak < 4 * ex.nbytes, (peak, ex.nbytes)
