"""Synthetic speakers and the conditions of each set of the generated corpus.

A speaker is an eSpeak voice + variant + pitch + pitch range + rate. Training speakers come
from the "seen" accents and variants; the in-domain test has NEW speakers of those voice types;
each out-of-domain test changes one factor the model never heard: accent, voice variant,
speaking rate, additive noise level, babble, or reverberation. No test speaker occurs in train.
"""

import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from espnet_omni.synth.espeak import Voice

SEEN_ACCENTS = ["en-us", "en", "en-GB-x-rp", "en-US-nyc"]
UNSEEN_ACCENTS = ["en-GB-scotland", "en-029", "en-GB-x-gbclan", "en-GB-x-gbcwmd"]
SEEN_VARIANTS = ["m1", "m2", "m3", "m5", "f1", "f2", "f3", "adam", "linda", "edward"]
UNSEEN_VARIANTS = ["m7", "m8", "f5", "klatt", "klatt3", "croak", "grandpa", "Denis",
                   "shelby", "iven"]
NORMAL_RATES = (130, 220)
EXTREME_RATES = ((80, 105), (290, 340))


@dataclass(frozen=True)
class Condition:
    """How one set is made.

    Attributes:
        accents, variants: voice pools.
        rates: list of (low, high) words-per-minute ranges.
        noise_prob: share of utterances with additive coloured noise.
        noise_snr: (low, high) SNR in dB of that noise.
        babble_prob, babble_snr: the same for babble of 3-5 other talkers.
        reverb_prob, reverb_rt60: the same for reverberation (RT60 range in seconds).
        held_out_text: use the sentences reserved for tests.
    """

    accents: Tuple[str, ...]
    variants: Tuple[str, ...]
    rates: Tuple[Tuple[int, int], ...] = (NORMAL_RATES,)
    noise_prob: float = 0.0
    noise_snr: Tuple[float, float] = (20.0, 30.0)
    babble_prob: float = 0.0
    babble_snr: Tuple[float, float] = (10.0, 20.0)
    reverb_prob: float = 0.0
    reverb_rt60: Tuple[float, float] = (0.2, 0.4)
    held_out_text: bool = True


SEEN = dict(accents=tuple(SEEN_ACCENTS), variants=tuple(SEEN_VARIANTS))

# Training hears some noise and reverberation at mild levels and normal rates, so that the
# out-of-domain sets are hard (stronger, or of a kind never heard) but not hopeless.
MILD = dict(noise_prob=0.2, noise_snr=(15.0, 30.0), reverb_prob=0.1, reverb_rt60=(0.1, 0.3))
CONDITIONS: Dict[str, Condition] = {
    "train": Condition(**SEEN, **MILD, held_out_text=False),
    "dev": Condition(**SEEN, **MILD),
    "test_clean": Condition(**SEEN),
    "test_accent": Condition(accents=tuple(UNSEEN_ACCENTS), variants=tuple(SEEN_VARIANTS)),
    "test_variant": Condition(accents=tuple(SEEN_ACCENTS), variants=tuple(UNSEEN_VARIANTS)),
    "test_rate": Condition(**SEEN, rates=EXTREME_RATES),
    "test_noise": Condition(**SEEN, noise_prob=1.0, noise_snr=(0.0, 10.0)),
    "test_babble": Condition(**SEEN, babble_prob=1.0, babble_snr=(5.0, 15.0)),
    "test_reverb": Condition(**SEEN, reverb_prob=1.0, reverb_rt60=(0.5, 1.0)),
}
TEST_SETS = [name for name in CONDITIONS if name.startswith("test_")]


def draw_speaker(rng: random.Random, condition: Condition) -> Voice:
    low, high = rng.choice(condition.rates)
    return Voice(
        language=rng.choice(condition.accents),
        variant=rng.choice(condition.variants),
        pitch=rng.randrange(25, 76, 5),
        pitch_range=rng.randrange(20, 81, 10),
        rate=rng.randrange(low, high + 1, 5),
    )


def draw_speakers(
    rng: random.Random, condition: Condition, count: int, exclude: Optional[set] = None
) -> List[Voice]:
    """``count`` distinct speakers of a condition, none of whose ids is in ``exclude``."""
    exclude = set() if exclude is None else exclude
    speakers: Dict[str, Voice] = {}
    attempts = 0
    while len(speakers) < count:
        voice = draw_speaker(rng, condition)
        if voice.speaker_id not in exclude:
            speakers.setdefault(voice.speaker_id, voice)
        attempts += 1
        if attempts > 1000 * count:
            raise RuntimeError(f"cannot draw {count} distinct speakers for {condition}")
    return list(speakers.values())
