"""Signal processing for the generated corpus: resampling, noise, babble, reverberation.

Every function takes an explicit ``numpy.random.Generator`` so that a corpus is reproducible
from its seed.
"""

from typing import Sequence

import numpy as np

from espnet_omni.extras import require_extra

soxr = require_extra("soxr", "Resampling the generated corpus")


def resample(pcm: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """float32 resampling (soxr, high quality)."""
    if rate_in == rate_out:
        return pcm.astype(np.float32)
    return soxr.resample(pcm.astype(np.float32), rate_in, rate_out, quality="HQ")


def _power(x: np.ndarray) -> float:
    return float(np.mean(x.astype(np.float64) ** 2)) + 1e-12


def mix_at_snr(speech: np.ndarray, interference: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + interference scaled so that the speech-to-interference ratio is ``snr_db``."""
    interference = np.resize(interference, speech.shape)
    gain = np.sqrt(_power(speech) / (_power(interference) * 10 ** (snr_db / 10)))
    return speech + gain * interference


def coloured_noise(rng: np.random.Generator, length: int, colour: str) -> np.ndarray:
    """White, pink (1/f) or brown (1/f^2) Gaussian noise."""
    white = rng.standard_normal(length)
    if colour == "white":
        return white
    exponent = {"pink": 0.5, "brown": 1.0}[colour]
    spectrum = np.fft.rfft(white)
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    return np.fft.irfft(spectrum / freqs**exponent, n=length)


def babble(talkers: Sequence[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of other talkers, each looped to ``length`` and started at a random offset."""
    out = np.zeros(length)
    for talker in talkers:
        looped = np.resize(talker, length + talker.size)
        start = int(rng.integers(0, talker.size))
        out += looped[start : start + length] / np.sqrt(_power(talker))
    return out


def synthetic_rir(rng: np.random.Generator, rt60: float, sample_rate: int) -> np.ndarray:
    """Exponentially decaying noise tail with a direct path: a room impulse response."""
    length = int(rt60 * sample_rate)
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail[: int(0.002 * sample_rate)] = 0.0
    rir = 0.3 * tail / np.sqrt(np.sum(tail**2) + 1e-12)
    rir[0] = 1.0
    return rir


def reverberate(speech: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with ``rir`` (FFT), keeping the original length."""
    n = speech.size + rir.size - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(speech, size) * np.fft.rfft(rir, size), size)[: speech.size]
    return wet * np.sqrt(_power(speech) / _power(wet))


def to_int16(x: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale to ``peak`` of full scale if louder, then quantise to int16."""
    top = np.max(np.abs(x)) if x.size else 0.0
    if top > peak:
        x = x * (peak / top)
    return np.round(x * 32767).astype(np.int16)
