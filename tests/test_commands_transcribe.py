"""Transcribing files with a packed model: the transcribe command on mixed good and bad files,
44.1 kHz stereo and a long file; the audio it reads; loading a re-packed zip by name."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_omni.audio_input import AudioInputError, list_sources, read_segments, resample

from conftest import make_untrained_experiment, run_module, write_tone_token_list

RATE = 16000


@pytest.fixture(scope="module")
def packed(tone_corpus, tmp_path_factory):
    """Two untrained tiny models and a zip of the Omni-router one."""
    root = tmp_path_factory.mktemp("transcribe")
    tokens = write_tone_token_list(root / "tokens.txt")
    exps = {name: make_untrained_experiment(root / "exp", name, tokens) for name in ("omni_router", "switch")}
    run_module("espnet2.bin.pack", "asr", "--asr_train_config", "exp/asr_omni_router/config.yaml",
               "--asr_model_file", "exp/asr_omni_router/valid.cer_ctc.best.pth",
               "--outpath", "asr_omni_router.zip", cwd=root)
    return root, exps, root / "asr_omni_router.zip"


def dev_waves(tone_corpus):
    lines = (tone_corpus["dev"] / "wav.scp").read_text().splitlines()
    return {line.split()[0]: soundfile.read(line.split()[1], dtype="float32")[0] for line in lines}


def long_recording(waves, seconds):
    """Dev utterances one after the other, 0.4 s of silence between them, up to ``seconds``."""
    pieces, total = [], 0
    while total < seconds * RATE:
        for wave in waves.values():
            pieces += [wave, np.zeros(int(0.4 * RATE), np.float32)]
            total += wave.size + int(0.4 * RATE)
    return np.concatenate(pieces)[: int(seconds * RATE)]


def test_stereo_44k_is_read_as_the_mono_16k_signal(tmp_path, tone_corpus):
    wave = next(iter(dev_waves(tone_corpus).values()))
    stereo = np.stack([resample(wave, RATE, 44100), 0.5 * resample(wave, RATE, 44100)], axis=1)
    soundfile.write(tmp_path / "stereo.wav", stereo, 44100, subtype="FLOAT")
    (segment,) = read_segments(str(tmp_path / "stereo.wav"), RATE)
    n = min(segment.samples.size, wave.size)
    assert abs(segment.samples.size - wave.size) <= 1
    # The channels averaged (0.75 of the signal), back at 16 kHz: the signal, to the resampler's error.
    error = segment.samples[100:n - 100] - 0.75 * wave[100:n - 100]
    assert np.sqrt(np.mean(error**2)) < 0.01 * np.sqrt(np.mean(wave**2))


def test_a_long_file_is_cut_at_pauses_into_bounded_segments_in_bounded_memory(tmp_path, tone_corpus):
    audio = long_recording(dev_waves(tone_corpus), 120)
    soundfile.write(tmp_path / "long.flac", audio, RATE)
    tracemalloc.start()
    segments = []
    for segment in read_segments(str(tmp_path / "long.flac"), RATE, max_seconds=10):
        segments.append((segment.start, segment.end, segment.samples.size))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert segments[0][0] == 0 and segments[-1][1] == pytest.approx(120)
    assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))  # contiguous
    assert all(end - start <= 10 for start, end, _ in segments) and len(segments) >= 12
    for start, end, size in segments:
        assert size == round((end - start) * RATE)
    for _, end, _ in segments[:-1]:  # each cut in a pause between utterances
        around = audio[int(end * RATE) - 400: int(end * RATE) + 400]
        assert np.abs(around).max() < 0.05, end
    # 120 s of float32 are 7.7 MB; one 10 s segment 0.64 MB.
    assert peak < 8 * 10 * RATE * 4, peak


def test_bad_files_are_named(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE)
    soundfile.write(tmp_path / "silent.wav", np.zeros(RATE, np.float32), RATE)
    for name, reason in (("bad.wav", "unreadable"), ("empty.wav", "empty"), ("silent.wav", "silent"),
                         ("missing.wav", "no such file")):
        with pytest.raises(AudioInputError, match=rf"{name}: {reason}"):
            list(read_segments(str(tmp_path / name), RATE))


def test_sources_from_files_folders_and_wav_scp(tmp_path, tone_corpus):
    folder = tmp_path / "calls"
    (folder / "day 1").mkdir(parents=True)
    for name in ("day 1/a.wav", "b.flac", "notes.txt"):
        (folder / name).write_bytes(b"")
    sources = list_sources([str(folder), str(tone_corpus["dev"] / "wav.scp"), str(tmp_path / "b.flac")])
    ids = [s.utt_id for s in sources]
    assert ids[:2] == ["b", "day_1_a"]  # the folder's audio files, sorted by path; notes.txt left out
    assert ids[2:-1] == [line.split()[0] for line in (tone_corpus["dev"] / "wav.scp").read_text().splitlines()]
    assert ids[-1] == "b-2" and sources[-1].path == str(tmp_path / "b.flac")  # a repeated id made unique


@pytest.mark.timeout(600)
def test_transcribe_command_on_mixed_files(packed, tone_corpus, tmp_path):
    _, _, model_zip = packed
    waves = dev_waves(tone_corpus)
    first = next(iter(waves.values()))
    soundfile.write(tmp_path / "stereo44.wav", np.stack([resample(first, RATE, 44100)] * 2, axis=1), 44100)
    soundfile.write(tmp_path / "long.flac", long_recording(waves, 70), RATE)
    soundfile.write(tmp_path / "silent.wav", np.zeros(RATE, np.float32), RATE)
    (tmp_path / "broken.wav").write_bytes(b"RIFF....")
    files = ["stereo44.wav", "missing.wav", "long.flac", "broken.wav", "silent.wav",
             str(tone_corpus["dev"] / "wav.scp")]
    work = tmp_path / "elsewhere"  # no recipe folder, no experiment folder
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "espnet_omni.bin.transcribe", "--model", str(model_zip),
         *[f if f.startswith("/") else str(tmp_path / f) for f in files], "--format", "jsonl",
         "--output", "out.jsonl", "--max_seconds", "20", "--batch_size", "4", "--cache_dir", str(tmp_path / "cache")],
        cwd=work, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    for name, reason in (("missing.wav", "no such file"), ("broken.wav", "unreadable"),
                         ("silent.wav", "silent")):
        assert f"ERROR: {tmp_path / name}: {reason}" in proc.stderr
    assert "3 of 13 files failed" in proc.stderr
    results = [json.loads(line) for line in (work / "out.jsonl").read_text().splitlines()]
    assert [r["utt"] for r in results] == ["stereo44", "missing", "long", "broken", "silent", *waves]
    good = {r["utt"]: r for r in results if "error" not in r}
    assert set(good) == {"stereo44", "long", *waves}
    long = good["long"]
    assert long["duration"] == pytest.approx(70) and len(long["segments"]) >= 4
    assert all(s["end"] - s["start"] <= 20 for s in long["segments"])
    assert long["text"] == " ".join(s["text"].strip() for s in long["segments"] if s["text"].strip())
    assert any(r["text"] for r in good.values())  # an untrained model still emits tokens

    # Kaldi text, one utterance per batch: the packed model, in a folder without the experiment,
    # gives the experiment folder's hypotheses.
    def kaldi_text(model):
        proc = subprocess.run(
            [sys.executable, "-m", "espnet_omni.bin.transcribe", "--model", str(model),
             str(tone_corpus["dev"] / "wav.scp"), "--batch_size", "1", "--cache_dir", str(tmp_path / "cache")],
            cwd=work, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [line.split(" ", 1) for line in proc.stdout.splitlines()]

    from_zip = kaldi_text(model_zip)
    assert [utt for utt, _ in from_zip] == list(waves)
    assert from_zip == kaldi_text(packed[1]["omni_router"])


@pytest.mark.timeout(600)
def test_nbest_and_lm_options(packed, tone_corpus, tmp_path):
    _, _, model_zip = packed
    wav = tone_corpus["dev"] / "wav.scp"
    proc = run_module("espnet_omni.bin.transcribe", "--model", str(model_zip), str(wav),
                      "--nbest", "3", "--format", "jsonl", "--cache_dir", "cache", cwd=tmp_path)
    for line in proc.stdout.splitlines():
        segment = json.loads(line)["segments"][0]
        scores = [h["score"] for h in segment["nbest"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert segment["text"] == segment["nbest"][0]["text"]
    proc = subprocess.run([sys.executable, "-m", "espnet_omni.bin.transcribe", "--model", str(model_zip),
                           str(wav), "--lm", "true", "--cache_dir", "cache"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "has no packed LM" in proc.stderr


RELOAD = """
import sys, torch
import espnet_omni
from espnet_model_zoo.downloader import ModelDownloader, str_to_hash
from pathlib import Path
from espnet2.bin.asr_inference import Speech2Text
s2t = Speech2Text.from_pretrained(sys.argv[1], ctc_weight=1.0, beam_size=1, lm_weight=0.0)
print(type(s2t.asr_model.encoder).__name__, ModelDownloader().cachedir / str_to_hash(Path(sys.argv[1]).absolute()))
"""


@pytest.mark.timeout(600)
def test_a_zip_packed_again_to_the_same_path_loads_the_new_model(packed, tmp_path):
    root, _, _ = packed
    model_zip = tmp_path / "asr_model.zip"
    script = tmp_path / "reload.py"
    script.write_text(RELOAD)
    loaded, cache = [], None
    try:
        for name in ("omni_router", "switch"):
            run_module("espnet2.bin.pack", "asr", "--asr_train_config", f"exp/asr_{name}/config.yaml",
                       "--asr_model_file", f"exp/asr_{name}/valid.cer_ctc.best.pth",
                       "--outpath", str(model_zip), cwd=root)
            out = subprocess.run([sys.executable, str(script), str(model_zip)], cwd=tmp_path,
                                 capture_output=True, text=True)
            assert out.returncode == 0, out.stderr[-3000:]
            encoder, cache = out.stdout.split()[-2:]
            loaded.append(encoder)
    finally:
        if cache:  # the model zoo's default cache folder
            shutil.rmtree(cache, ignore_errors=True)
    assert loaded == ["OmniRouterEncoder", "SwitchEncoder"]


def fixed_cache_lookup(meta):
    """ESPnet's get_dict_from_cache looking in the folder of meta.yaml, where unpack writes."""
    import yaml

    meta = Path(meta)
    if not meta.exists():
        return None
    d = yaml.safe_load(meta.read_text())
    files = {**d["yaml_files"], **d["files"]}
    if not all((meta.parent / v).exists() for v in files.values()):
        return None
    return {k: str(meta.parent / v) for k, v in files.items()}


@pytest.mark.timeout(600)
def test_a_cache_that_finds_its_unpack_still_follows_a_repacked_zip(packed, tmp_path, monkeypatch):
    """With a cache lookup that finds an earlier unpack, the stamp is what makes a zip packed
    again to the same path load anew; without it the zoo hands back the old model file."""
    from espnet2.main_funcs import pack_funcs
    from espnet_model_zoo import downloader

    import espnet_omni  # noqa: F401  (wraps unpack_local_file)

    _, exps, _ = packed
    monkeypatch.setattr(downloader, "get_dict_from_cache", fixed_cache_lookup)
    monkeypatch.setattr(pack_funcs, "get_dict_from_cache", fixed_cache_lookup)
    exp = tmp_path / "exp"
    shutil.copytree(exps["omni_router"], exp)

    def pack(weights_of):  # the same experiment folder, another model file
        shutil.copy(exps[weights_of] / "valid.cer_ctc.best.pth", exp / "valid.cer_ctc.best.pth")
        run_module("espnet2.bin.pack", "asr", "--asr_train_config", "exp/config.yaml",
                   "--asr_model_file", "exp/valid.cer_ctc.best.pth", "--outpath", "model.zip",
                   cwd=tmp_path)

    def load(unpack_local_file, cache):
        files = unpack_local_file(downloader.ModelDownloader(cachedir=cache), str(tmp_path / "model.zip"))
        return hashlib.sha256(Path(files["asr_model_file"]).read_bytes()).hexdigest()

    guarded = downloader.ModelDownloader.unpack_local_file
    assert guarded.follows_zip
    follows = {}
    for name, method in (("guarded", guarded), ("espnet_model_zoo's", guarded.__wrapped__)):
        pack("omni_router")
        before = load(method, tmp_path / name)
        pack("switch")
        follows[name] = load(method, tmp_path / name) != before
    assert follows == {"guarded": True, "espnet_model_zoo's": False}
