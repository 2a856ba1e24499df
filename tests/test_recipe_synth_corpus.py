"""The generated corpus: deterministic PCM for any worker count, disjoint speakers, grammar."""

import random

import pytest
import soundfile

from espnet_omni.synth import grammar
from espnet_omni.synth.corpus import CorpusConfig, generate, plan
from espnet_omni.synth.speakers import CONDITIONS, SEEN_ACCENTS, SEEN_VARIANTS, TEST_SETS

SMALL = dict(seed=3, num_train=24, num_dev=6, num_test=4)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    config = CorpusConfig(**SMALL)
    one = generate(config, root / "a" / "audio", root / "a" / "data", num_workers=1, progress=False)
    two = generate(config, root / "b" / "audio", root / "b" / "data", num_workers=2, progress=False)
    return root, one, two


def test_same_seed_gives_identical_pcm_for_1_and_2_workers(corpora):
    _, one, two = corpora
    assert one["sets"].keys() == two["sets"].keys() == set(CONDITIONS)
    for name in one["sets"]:
        assert one["sets"][name]["pcm_sha256"] == two["sets"][name]["pcm_sha256"], name


def test_other_seed_gives_other_audio(corpora, tmp_path):
    _, one, _ = corpora
    other = generate(CorpusConfig(**{**SMALL, "seed": 4}, sets=["dev"]), tmp_path / "audio",
                     tmp_path / "data", progress=False)
    assert set(other["sets"]["dev"]["pcm_sha256"].values()).isdisjoint(one["sets"]["dev"]["pcm_sha256"].values())


def test_matching_manifest_skips_regeneration(corpora):
    root, one, _ = corpora
    wav = next((root / "a" / "audio" / "train").glob("*.flac"))
    before = wav.stat().st_mtime_ns
    again = generate(CorpusConfig(**SMALL), root / "a" / "audio", root / "a" / "data", progress=False)
    assert again == one
    assert wav.stat().st_mtime_ns == before


def test_kaldi_dirs_are_consistent_and_audio_is_16k(corpora):
    from espnet_omni.recipe.data_dir import validate

    root, one, _ = corpora
    for name, info in one["sets"].items():
        durations = validate(root / "a" / "data" / name)
        assert len(durations) == info["utterances"]
        assert all(0.3 < d < 30 for d in durations.values())
    path = (root / "a" / "data" / "train" / "wav.scp").read_text().split()[1]
    assert soundfile.info(path).samplerate == 16000


def test_no_test_speaker_occurs_in_train():
    utts = plan(CorpusConfig(seed=0, num_train=300, num_dev=40, num_test=40))
    speakers = {}
    for u in utts:
        speakers.setdefault(u.set_name, set()).add(u.voice.speaker_id)
    for name in ["dev", *TEST_SETS]:
        assert speakers[name].isdisjoint(speakers["train"]), name
    for name in TEST_SETS:
        for other in TEST_SETS:
            if other != name:
                assert speakers[name].isdisjoint(speakers[other])


def test_out_of_domain_sets_change_the_intended_factor():
    utts = plan(CorpusConfig(seed=0, num_train=200, num_dev=20, num_test=40))
    by_set = {}
    for u in utts:
        by_set.setdefault(u.set_name, []).append(u)
    train = by_set["train"]
    assert {u.voice.language for u in train} <= set(SEEN_ACCENTS)
    assert {u.voice.language for u in by_set["test_accent"]}.isdisjoint(SEEN_ACCENTS)
    assert {u.voice.variant for u in by_set["test_variant"]}.isdisjoint(SEEN_VARIANTS)
    train_rates = {u.voice.rate for u in train}
    assert all(u.voice.rate < min(train_rates) or u.voice.rate > max(train_rates) for u in by_set["test_rate"])
    assert all(u.noise and u.noise[1] <= 10 for u in by_set["test_noise"])
    assert min(u.noise[1] for u in train if u.noise) >= 15
    assert all(u.babble for u in by_set["test_babble"]) and not any(u.babble for u in train)
    assert all(u.reverb_rt60 >= 0.5 for u in by_set["test_reverb"])
    assert max(u.reverb_rt60 for u in train if u.reverb_rt60) <= 0.3


def test_test_sentences_are_unseen_in_training():
    utts = plan(CorpusConfig(seed=0, num_train=500, num_dev=20, num_test=50))
    train_text = {u.text for u in utts if u.set_name == "train"}
    for u in utts:
        if u.set_name != "train":
            assert u.text not in train_text


def test_grammar_numbers_and_vocabulary():
    assert grammar.say_number(0) == "zero"
    assert grammar.say_number(17) == "seventeen"
    assert grammar.say_number(342) == "three hundred and forty two"
    assert grammar.say_number(2005) == "two thousand and five"
    assert grammar.say_number(1990) == "one thousand nine hundred and ninety"
    assert grammar.say_ordinal(21) == "twenty first" and grammar.say_ordinal(30) == "thirtieth"
    vocab = grammar.vocabulary()
    assert 250 <= len(vocab) <= 500
    rng = random.Random(0)
    for _ in range(500):
        sentence = grammar.generate(rng)
        assert sentence == sentence.lower() and set(sentence.split()) <= vocab
