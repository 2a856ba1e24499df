"""Plan and write the generated corpus as Kaldi-style data dirs.

The plan (texts, speakers, augmentation parameters, seeds) is drawn from the corpus seed
alone; each utterance is then rendered from its own seeds, so the PCM is byte-identical for
any number of worker processes. A manifest records the configuration and a hash of every
utterance's int16 PCM; a corpus whose manifest matches the request is not generated again.
"""

import hashlib
import json
import multiprocessing
import random
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import soundfile

from espnet_omni.synth import augment, grammar
from espnet_omni.synth.espeak import Synthesizer, Voice
from espnet_omni.synth.speakers import CONDITIONS, SEEN, Condition, draw_speakers

SAMPLE_RATE = 16000
FORMAT_VERSION = 1
NOISE_COLOURS = ("white", "pink", "brown")


@dataclass(frozen=True)
class Utterance:
    """Everything needed to render one utterance."""

    utt_id: str
    set_name: str
    text: str
    voice: Voice
    seed: int
    noise: Optional[Tuple[str, float]] = None  # (colour, snr dB)
    babble: Optional[Tuple[Tuple[Tuple[str, Voice, int], ...], float]] = None
    reverb_rt60: Optional[float] = None


@dataclass
class CorpusConfig:
    """Sizes and seed of a generated corpus."""

    seed: int = 0
    num_train: int = 3000
    num_dev: int = 200
    num_test: int = 200
    sets: List[str] = field(default_factory=lambda: list(CONDITIONS))

    def size(self, set_name: str) -> int:
        if set_name == "train":
            return self.num_train
        return self.num_dev if set_name == "dev" else self.num_test


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def plan(config: CorpusConfig) -> List[Utterance]:
    """Draw every utterance of every set (deterministic in ``config``)."""
    utterances: List[Utterance] = []
    used_speakers: set = set()
    for set_name in config.sets:
        if set_name not in CONDITIONS:
            raise ValueError(f"unknown set '{set_name}'; known: {sorted(CONDITIONS)}")
        condition = CONDITIONS[set_name]
        count = config.size(set_name)
        rng = random.Random(_seed(config.seed, set_name))
        per_speaker = 20 if set_name == "train" else 10
        speakers = draw_speakers(rng, condition, max(2, count // per_speaker), used_speakers)
        used_speakers.update(v.speaker_id for v in speakers)
        texts = grammar.sentences(rng, count, held_out=condition.held_out_text)
        for index, text in enumerate(texts):
            voice = speakers[index % len(speakers)]
            utterances.append(_draw_conditions(rng, condition, config.seed, set_name, index, text, voice))
    return utterances


def _draw_conditions(rng, condition: Condition, seed, set_name, index, text, voice) -> Utterance:
    noise = babble = reverb = None
    if rng.random() < condition.reverb_prob:
        reverb = round(rng.uniform(*condition.reverb_rt60), 3)
    if rng.random() < condition.noise_prob:
        noise = (rng.choice(NOISE_COLOURS), round(rng.uniform(*condition.noise_snr), 2))
    if rng.random() < condition.babble_prob:
        talkers = tuple(
            (grammar.generate(rng), draw_speakers(rng, Condition(**SEEN), 1)[0], _seed(seed, set_name, index, k))
            for k in range(rng.randint(3, 5))
        )
        babble = (talkers, round(rng.uniform(*condition.babble_snr), 2))
    utt_id = f"{voice.speaker_id}-{set_name}{index:05d}"
    return Utterance(utt_id, set_name, text, voice, _seed(seed, set_name, index), noise, babble, reverb)


_synthesizer: Optional[Synthesizer] = None


def _start_worker() -> None:
    global _synthesizer
    _synthesizer = Synthesizer()


def _speech(text: str, voice: Voice, seed: int) -> np.ndarray:
    pcm = np.frombuffer(_synthesizer.synthesize(text, voice, seed), dtype=np.int16)
    return augment.resample(pcm.astype(np.float32) / 32768.0, _synthesizer.sample_rate, SAMPLE_RATE)


def render(utt: Utterance) -> np.ndarray:
    """The int16 PCM at 16 kHz of one utterance (needs a started worker)."""
    rng = np.random.default_rng(utt.seed)
    x = _speech(utt.text, utt.voice, utt.seed).astype(np.float64)
    if utt.reverb_rt60 is not None:
        x = augment.reverberate(x, augment.synthetic_rir(rng, utt.reverb_rt60, SAMPLE_RATE))
    if utt.babble is not None:
        talkers, snr = utt.babble
        others = [_speech(text, voice, seed) for text, voice, seed in talkers]
        x = augment.mix_at_snr(x, augment.babble(others, x.size, rng), snr)
    if utt.noise is not None:
        colour, snr = utt.noise
        x = augment.mix_at_snr(x, augment.coloured_noise(rng, x.size, colour), snr)
    return augment.to_int16(x)


def _render_and_write(job: Tuple[Utterance, str]) -> Tuple[str, str, int]:
    utt, path = job
    pcm = render(utt)
    soundfile.write(path, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return utt.utt_id, hashlib.sha256(pcm.tobytes()).hexdigest(), int(pcm.size)


def write_kaldi_dir(data_dir: Path, utterances: Iterable[Utterance], paths: Dict[str, str]) -> None:
    """wav.scp, text, utt2spk, spk2utt (sorted by utterance id, as Kaldi requires)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = sorted(utterances, key=lambda u: u.utt_id)
    (data_dir / "wav.scp").write_text("".join(f"{u.utt_id} {paths[u.utt_id]}\n" for u in rows))
    (data_dir / "text").write_text("".join(f"{u.utt_id} {u.text}\n" for u in rows))
    (data_dir / "utt2spk").write_text("".join(f"{u.utt_id} {u.voice.speaker_id}\n" for u in rows))
    spk2utt: Dict[str, List[str]] = {}
    for u in rows:
        spk2utt.setdefault(u.voice.speaker_id, []).append(u.utt_id)
    (data_dir / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))


def _manifest_key(config: CorpusConfig) -> dict:
    return {"format_version": FORMAT_VERSION, **asdict(config)}


def generate(
    config: CorpusConfig,
    audio_dir: Path,
    data_dir: Path,
    num_workers: int = 1,
    progress: bool = True,
) -> dict:
    """Render the corpus (unless its manifest already matches) and write the data dirs.

    Returns:
        the manifest: the configuration, and per set the number of utterances, hours, and
        the sha256 of each utterance's int16 PCM.
    """
    audio_dir, data_dir = Path(audio_dir), Path(data_dir)
    manifest_path = audio_dir / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        complete = all((data_dir / s / "wav.scp").exists() for s in config.sets)
        if manifest.get("config") == _manifest_key(config) and complete:
            return manifest

    utterances = plan(config)
    jobs = []
    paths: Dict[str, str] = {}
    for utt in utterances:
        folder = audio_dir / utt.set_name
        folder.mkdir(parents=True, exist_ok=True)
        paths[utt.utt_id] = str((folder / f"{utt.utt_id}.flac").resolve())
        jobs.append((utt, paths[utt.utt_id]))

    results: List[Tuple[str, str, int]] = []
    context = multiprocessing.get_context("fork")
    with context.Pool(num_workers, initializer=_start_worker) as pool:
        iterator = pool.imap(_render_and_write, jobs, chunksize=8)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=len(jobs), desc="synthesising", unit="utt")
        results.extend(iterator)

    by_set: Dict[str, List[Utterance]] = {}
    for utt in utterances:
        by_set.setdefault(utt.set_name, []).append(utt)
    hashes = {utt_id: (digest, samples) for utt_id, digest, samples in results}
    manifest = {"config": _manifest_key(config), "sample_rate": SAMPLE_RATE, "sets": {}}
    for set_name, utts in by_set.items():
        write_kaldi_dir(data_dir / set_name, utts, paths)
        samples = sum(hashes[u.utt_id][1] for u in utts)
        manifest["sets"][set_name] = {
            "utterances": len(utts),
            "hours": round(samples / SAMPLE_RATE / 3600, 4),
            "speakers": len({u.voice.speaker_id for u in utts}),
            "pcm_sha256": {u.utt_id: hashes[u.utt_id][0] for u in sorted(utts, key=lambda u: u.utt_id)},
        }
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest
