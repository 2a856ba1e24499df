"""Audio in the corpora's real formats, written by the tests.

``write_sphere`` writes NIST SPHERE files as the LDC distributes them: plain 16-bit PCM, u-law,
and 16-bit PCM with embedded Shorten v2 compression (WSJ's ``.wv1``). No Shorten encoder is
installable here (Debian ships none, PyPI only decoders), so ``shorten_stream`` encodes one:
DIFF1 blocks with Rice-coded residuals, as Tony Robinson's format defines them (TR.156). The
u-law flavour of Shorten (Hub5'00's ``ulaw,embedded-shorten-v2.00``) maps samples through a
sorted-code domain that only the reference encoder defines; it is not written here.
"""

from pathlib import Path

import numpy as np
import soundfile


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A tone plus a little noise, int16 of shape (T, channels); each channel a different pitch."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    cols = [0.3 * np.sin(2 * np.pi * freq * (c + 1) * t) + 0.01 * rng.standard_normal(t.size) for c in range(channels)]
    return (np.stack(cols, axis=1) * 32767).astype(np.int16)


class _BitWriter:
    def __init__(self):
        self.bits = []

    def uvar(self, value: int, k: int) -> None:
        self.bits += [0] * (value >> k) + [1]
        self.bits += [(value >> i) & 1 for i in range(k - 1, -1, -1)]

    def ulong(self, value: int) -> None:
        k = value.bit_length()
        self.uvar(k, 2)
        self.uvar(value, k)

    def var(self, value: int, k: int) -> None:
        self.uvar((value << 1) if value >= 0 else ((~value) << 1) | 1, k)

    def to_bytes(self) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


def shorten_stream(samples: np.ndarray, blocksize: int = 256) -> bytes:
    """Shorten v2 stream of int16 samples (T, C): little-endian PCM type, DIFF1 blocks."""
    frames, channels = samples.shape
    padded = np.zeros((-(-frames // blocksize) * blocksize, channels), dtype=np.int64)
    padded[:frames] = samples
    out = _BitWriter()
    for value in (5, channels, blocksize, 0, 0, 0):  # ftype s16lh, nchan, blocksize, maxnlpc, nmean, nskip
        out.ulong(value)
    previous = [0] * channels
    for start in range(0, padded.shape[0], blocksize):
        for c in range(channels):
            block = padded[start:start + blocksize, c]
            residual = np.diff(block, prepend=previous[c])
            previous[c] = int(block[-1])
            mean = int(np.abs(residual).mean())
            k = max(1, mean.bit_length())
            out.uvar(1, 2)  # DIFF1
            out.uvar(k - 1, 3)
            for r in residual.tolist():
                out.var(int(r), k)
    out.uvar(4, 2)  # QUIT
    return b"ajkg\x02" + out.to_bytes()


def write_sphere(path: Path, samples: np.ndarray, rate: int, coding: str = "pcm") -> Path:
    """Write int16 samples (T, C) as NIST SPHERE: coding "pcm", "ulaw" or "shorten"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = samples.reshape(samples.shape[0], -1)
    if coding in ("pcm", "ulaw"):
        soundfile.write(path, samples, rate, format="NIST", subtype="PCM_16" if coding == "pcm" else "ULAW")
        return path
    if coding != "shorten":
        raise ValueError(coding)
    fields = [
        f"sample_count -i {samples.shape[0]}",
        "sample_n_bytes -i 2",
        f"channel_count -i {samples.shape[1]}",
        "sample_byte_format -s2 01",
        f"sample_rate -i {rate}",
        "sample_coding -s26 pcm,embedded-shorten-v2.00",
        "sample_sig_bits -i 16",
        "end_head",
    ]
    header = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\n").encode("ascii")
    path.write_bytes(header.ljust(1024, b" ") + shorten_stream(samples))
    return path


def write_librispeech(root: Path, part: str = "test-clean", speakers=(("1089", "134686"), ("121", "121726")),
                      per_chapter: int = 2, seconds: float = 1.0) -> dict:
    """A LibriSpeech part as the official archive unpacks; returns {utt_id: (text, int16 samples)}."""
    written = {}
    for s, (spk, chapter) in enumerate(speakers):
        folder = Path(root) / "LibriSpeech" / part / spk / chapter
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for n in range(per_chapter):
            utt = f"{spk}-{chapter}-{n:04d}"
            samples = tone(seconds + 0.25 * n, 16000, freq=200.0 + 50 * s + 10 * n, seed=n)
            soundfile.write(folder / f"{utt}.flac", samples, 16000, subtype="PCM_16")
            text = f"HE HOPED THERE WOULD BE STEW FOR DINNER {spk} {n}"
            lines.append(f"{utt} {text}")
            written[utt] = (text, samples[:, 0])
        (folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return written


def write_libriheavy(heavy: Path, light: Path, subset: str = "small", speakers=("100", "2043"),
                     files_per_speaker: int = 1, seconds: float = 24.0, cuts_per_file: int = 4) -> dict:
    """LibriLight-layout long FLACs under ``light`` (``<subset>/<spk>/<book>/<file>.flac``) and a
    Libriheavy cut manifest ``heavy/libriheavy_cuts_<subset>.jsonl.gz``
    written by lhotse itself, with the release's fields: sources relative to the download folder
    (``download/librilight/...``), one supervision per cut with ``custom`` texts (cased and
    punctuated, then normalised upper case), pre_texts and byte offsets, and the cut's
    ``text_path``. Returns {cut id: (start, duration, normalised text, recording path)}."""
    from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment

    cuts, written = [], {}
    for s, spk in enumerate(speakers):
        for k in range(files_per_speaker):
            book = f"book_{spk}_{k}_librivox_64kb_mp3"
            name = f"{k:02d}_chapter_64kb"
            relative = f"{subset}/{spk}/{book}/{name}"
            audio = Path(light) / f"{relative}.flac"
            audio.parent.mkdir(parents=True, exist_ok=True)
            samples = tone(seconds, 16000, freq=150.0 + 40 * s + 7 * k, seed=s * 10 + k)
            soundfile.write(audio, samples, 16000, subtype="PCM_16")
            recording = Recording(
                id=relative,
                sources=[AudioSource(type="file", channels=[0], source=f"download/librilight/{relative}.flac")],
                sampling_rate=16000, num_samples=samples.shape[0], duration=samples.shape[0] / 16000,
            )
            step = seconds / cuts_per_file
            for c in range(cuts_per_file):
                cut_id = f"{relative}_{c}"
                start, duration = round(c * step + 0.25, 2), round(step - 0.75, 2)
                cased = f"Chapter {c}, said {spk}: \"the mermaid's song!\""
                upper = f"CHAPTER {c} SAID {spk} THE MERMAID'S SONG"
                sup = SupervisionSegment(
                    id=cut_id, recording_id=relative, start=0.0, duration=duration, channel=0, language="English",
                    speaker=spk, custom={"texts": [cased, upper], "pre_texts": ["Before.", "BEFORE"],
                                         "begin_byte": 100 * c, "end_byte": 100 * c + 40},
                )
                text_path = f"download/librilight_text/{book}/text.txt"
                cuts.append(MonoCut(id=cut_id, start=start, duration=duration, channel=0, supervisions=[sup],
                                    recording=recording, custom={"text_path": text_path}))
                written[cut_id] = (start, duration, upper, audio)
    Path(heavy).mkdir(parents=True, exist_ok=True)
    CutSet.from_cuts(cuts).to_file(Path(heavy) / f"libriheavy_cuts_{subset}.jsonl.gz")
    return written
