"""Bad input in data dirs: every problem reported in one run with its file and line, audio that
cannot be read left out up to --max_bad_audio, everything else refused, and a filtered copy
never half-written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import REPO
from espnet_omni.bin import filter_data_dir, validate_data_dir
from espnet_omni.recipe.data_dir import DataDirError, filter_by_duration, validate

RATE = 16000
RECIPE = REPO / "egs2" / "omni_asr" / "asr1"


def noise(seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """int16 noise, (T,) or (T, channels): it compresses little, so a FLAC of it has many frames."""
    frames = int(seconds * RATE)
    shape = (frames,) if channels == 1 else (frames, channels)
    return (np.random.default_rng(seed).standard_normal(shape) * 3000).astype(np.int16)


def write_lines(path: Path, lines) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def write_dir(root: Path, n: int = 4, name: str = "set") -> Path:
    """A valid data dir of ``n`` utterances spk-u<i> (0.5 + 0.1 i s of WAV) of one speaker, in
    id order (spk-u10 before spk-u2)."""
    d, audio = root / name, root / f"{name}_audio"
    d.mkdir()
    audio.mkdir()
    utts = sorted((f"spk-u{i}", i) for i in range(n))
    for _, i in utts:
        soundfile.write(audio / f"u{i}.wav", noise(0.5 + 0.1 * i, seed=i), RATE)
    write_lines(d / "wav.scp", [f"{u} {audio / f'u{i}.wav'}" for u, i in utts])
    write_lines(d / "text", [f"{u} word {i}" for u, i in utts])
    write_lines(d / "utt2spk", [f"{u} spk" for u, _ in utts])
    ids = [u for u, _ in utts]
    write_lines(d / "spk2utt", ["spk " + " ".join(ids)])
    return d


def audio_of(d: Path, line: int) -> Path:
    return Path((d / "wav.scp").read_text().splitlines()[line - 1].split()[1])


def point(d: Path, line: int, path: Path) -> None:
    """wav.scp's line ``line`` (1-based) names ``path``."""
    lines = (d / "wav.scp").read_text().splitlines()
    lines[line - 1] = f"{lines[line - 1].split()[0]} {path}"
    write_lines(d / "wav.scp", lines)


def cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def flac(path: Path, seconds: float = 2.0) -> Path:
    out = path.with_suffix(".flac")
    soundfile.write(out, noise(seconds, seed=7), RATE, subtype="PCM_16")
    return out


def garble_middle(path: Path) -> Path:
    """200 zero bytes in the middle of a FLAC: its header and its end stay intact."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 200] = bytes(200)
    path.write_bytes(bytes(data))
    return path


def snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# name: (make the bad file from the good one at path, what the message says, skippable)
BAD_AUDIO = {
    "missing": (lambda p: (p.unlink(), p)[1], r"does not exist", True),
    "missing_folder": (lambda p: p.parent / "gone" / p.name, r"does not exist \(nor does its folder .*gone\)", True),
    "empty_file": (lambda p: (p.write_bytes(b""), p)[1], r"is empty \(0 bytes\)", True),
    "zero_length": (lambda p: (soundfile.write(p, np.zeros(0, np.int16), RATE), p)[1],
                    r"has no samples \(zero-length audio\)", True),
    "not_audio": (lambda p: (p.write_bytes(b"not a sound file " * 8), p)[1], r"cannot be read \(.*\)", True),
    "truncated_wav": (lambda p: cut(p, 0.5), r"is truncated: its header declares 19200 bytes of samples, the file "
                                              r"holds \d+", True),
    "truncated_flac": (lambda p: cut(flac(p), 0.6), r"is truncated or corrupt: its last samples do not decode", True),
    "sample_rate": (lambda p: (soundfile.write(p, noise(0.6), 8000), p)[1],
                    r"is 8000 Hz, the recipe expects 16000 Hz \(--fs\): refused, not resampled; resample the "
                    r"corpus first \(e\.g\. sox in\.flac -r 16000 out\.flac\)", False),
    "stereo": (lambda p: (soundfile.write(p, noise(0.6, channels=2), RATE), p)[1],
               r"has 2 channels, the recipe takes mono audio: refused, not mixed down", False),
}


@pytest.mark.parametrize("case", BAD_AUDIO)
def test_bad_audio_is_named_with_its_line(tmp_path, case):
    make, message, skippable = BAD_AUDIO[case]
    d = write_dir(tmp_path)
    bad = make(audio_of(d, 2))
    point(d, 2, bad)
    with pytest.raises(DataDirError) as info:
        validate(d)
    assert re.search(rf"wav\.scp:2: audio '{re.escape(str(bad))}' {message}", str(info.value)), str(info.value)
    assert [p.skippable for p in info.value.problems] == [skippable]
    # Tolerated under --max_bad_audio when it cannot be read; a rate or a layout never is.
    if skippable:
        assert sorted(validate(d, max_bad_audio=1)) == ["spk-u0", "spk-u2", "spk-u3"]
    else:
        with pytest.raises(DataDirError, match="refused"):
            validate(d, max_bad_audio=1)


def test_fs_sets_the_rate_expected(tmp_path, capsys):
    d = write_dir(tmp_path, n=2)
    with pytest.raises(SystemExit) as info:
        validate_data_dir.main([str(d), "--fs", "8000"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("is 16000 Hz, the recipe expects 8000 Hz (--fs): refused") == 2
    for line in (1, 2):
        soundfile.write(audio_of(d, line), noise(0.5), 8000)
    validate_data_dir.main([str(d), "--fs", "8000"])
    assert f"{d}: ok, 2 utterances" in capsys.readouterr().out


def test_every_problem_is_reported_in_one_run(tmp_path, capsys):
    d = write_dir(tmp_path)
    write_lines(d / "text", ["spk-u0", "spk-u1 word 1", "spk-u2 word 2", "spk-u3 word 3"])
    audio_of(d, 3).unlink()
    write_lines(d / "utt2spk", [f"spk-u{i} spk" for i in range(4)] + ["spk-u3 spk"])
    expected = [
        f"{d}/text:1: 'spk-u0' has no value (empty transcript)",
        f"{d}/utt2spk:5: duplicate id 'spk-u3'",
        f"{d}/wav.scp:3: audio '{audio_of(d, 3)}' does not exist",
    ]
    with pytest.raises(DataDirError) as info:
        validate(d)
    message = str(info.value)
    assert all(line in message.splitlines() for line in expected), message
    assert message.startswith(f"{d}: 2 problems:\n")
    assert f"{d}: 1 audio file cannot be read, more than --max_bad_audio 0 allows:" in message
    with pytest.raises(SystemExit) as exit_info:
        validate_data_dir.main([str(d)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert all(line in err for line in expected) and "Traceback" not in err


def test_problems_are_capped_per_file(tmp_path):
    d = write_dir(tmp_path, n=30)
    write_lines(d / "text", (d / "text").read_text().splitlines()[:3])
    with pytest.raises(DataDirError) as info:
        validate(d)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{d}: 27 problems:"
    assert lines[1] == f"{d}/text: no entry for 'spk-u11' of wav.scp (line 4)"  # after spk-u0, spk-u1, spk-u10
    assert len([line for line in lines if "no entry for" in line]) == 20
    assert lines[-1] == f"... and 7 more in {d}/text"
    assert len(info.value.problems) == 20


def _replace_line(number: int, new: bytes):
    def edit(data: bytes) -> bytes:
        lines = data.split(b"\n")
        lines[number - 1] = new
        return b"\n".join(lines)
    return edit


# (file, edit of its bytes, the problem(s) reported, how many): the other tables stay valid.
TABLE_PROBLEMS = {
    "empty_transcript": ("text", _replace_line(2, b"spk-u1  "), r"text:2: 'spk-u1' has no value \(empty transcript\)", 1),
    "blank_line": ("text", _replace_line(2, b""), r"text:2: empty line", 2),
    "duplicate_id": ("text", lambda s: s + b"spk-u3 again\n", r"text:5: duplicate id 'spk-u3'", 1),
    "unsorted_ids": ("wav.scp", lambda s: b"\n".join(reversed(s.rstrip(b"\n").split(b"\n"))) + b"\n",
                     r"wav\.scp:2: 'spk-u2' comes after 'spk-u3': the file must be sorted by id \(LC_ALL=C sort\)", 1),
    "extra_id": ("utt2spk", _replace_line(3, b"spk-u29 spk"),
                 r"utt2spk: no entry for 'spk-u2' of wav\.scp \(line 3\)\n.*utt2spk:3: 'spk-u29' is not in wav\.scp", 2),
    "missing_id": ("text", lambda s: s.replace(b"spk-u1 word 1\n", b""),
                   r"text: no entry for 'spk-u1' of wav\.scp \(line 2\)", 1),
    "non_utf8_text": ("text", _replace_line(2, b"spk-u1 caf\xe9"), r"text:2: not UTF-8 \(byte 0xe9 at column 11\)", 1),
    "non_utf8_utt2spk": ("utt2spk", _replace_line(1, b"spk-u0 sp\xffk"), r"utt2spk:1: not UTF-8 \(byte 0xff at column 10\)", 1),
    "missing_table": ("text", None, r"text: missing", 1),
    "spk2utt_disagrees": ("spk2utt", lambda s: b"spk spk-u0\n", r"spk2utt:1: speaker 'spk' disagrees with utt2spk", 1),
    "command_in_wav_scp": ("wav.scp", _replace_line(2, b"spk-u1 sox a.wav -t wav - |"),
                           r"wav\.scp:2: 'spk-u1' is not a plain audio path", 1),
}


@pytest.mark.parametrize("case", TABLE_PROBLEMS)
def test_table_problem_is_named(tmp_path, case):
    name, edit, message, count = TABLE_PROBLEMS[case]
    d = write_dir(tmp_path)
    path = d / name
    if edit is None:
        path.unlink()
    else:
        path.write_bytes(edit(path.read_bytes()))
    with pytest.raises(DataDirError) as info:
        validate(d)
    assert re.search(message, str(info.value)), str(info.value)
    assert len(info.value.problems) == count, str(info.value)


def test_non_utf8_is_named_and_reading_goes_on(tmp_path, capsys):
    d = write_dir(tmp_path)
    (d / "text").write_bytes(b"spk-u0 word 0\nspk-u1 \xff\xfe\nspk-u2\nspk-u3 word 3\n")
    with pytest.raises(SystemExit):
        validate_data_dir.main([str(d)])
    err = capsys.readouterr().err
    assert f"{d}/text:2: not UTF-8 (byte 0xff at column 8)" in err
    assert f"{d}/text:3: 'spk-u2' has no value (empty transcript)" in err
    assert "UnicodeDecodeError" not in err and "Traceback" not in err


def test_missing_data_dir_is_named(tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DataDirError, match=rf"^{re.escape(str(nowhere))}: 1 problem:\n{re.escape(str(nowhere))}: no such directory$"):
        validate(nowhere)
    with pytest.raises(SystemExit) as info:
        filter_data_dir.main([str(nowhere), str(tmp_path / "dst")])
    assert f"{nowhere}: no such directory" in str(info.value.code)
    assert not (tmp_path / "dst").exists() and not (tmp_path / "dst.tmp").exists()


def write_segmented_dir(root: Path) -> Path:
    """Recordings r0, r1 (2 s each), cut into two segments each."""
    d, audio = root / "seg", root / "seg_audio"
    d.mkdir()
    audio.mkdir()
    for r in ("r0", "r1"):
        soundfile.write(audio / f"{r}.wav", noise(2.0, seed=int(r[1])), RATE)
    write_lines(d / "wav.scp", [f"r{i} {audio / f'r{i}.wav'}" for i in range(2)])
    segs = [("spk-r0-a", "r0", 0.0, 0.9), ("spk-r0-b", "r0", 1.0, 2.0), ("spk-r1-a", "r1", 0.0, 0.9),
            ("spk-r1-b", "r1", 1.0, -1)]
    write_lines(d / "segments", [f"{u} {r} {s} {e}" for u, r, s, e in segs])
    write_lines(d / "text", [f"{u} word" for u, *_ in segs])
    write_lines(d / "utt2spk", [f"{u} spk" for u, *_ in segs])
    return d


def test_segment_past_the_end_of_its_recording_is_named(tmp_path):
    d = write_segmented_dir(tmp_path)
    assert validate(d) == pytest.approx({"spk-r0-a": 0.9, "spk-r0-b": 1.0, "spk-r1-a": 0.9, "spk-r1-b": 1.0})
    (d / "segments").write_text((d / "segments").read_text().replace("r1 1.0 -1", "r1 1.0 3.5"))
    with pytest.raises(DataDirError, match=r"segments:4: segment 1\.0-3\.5 s of 'r1' lies past its end \(2\.000 s\)"):
        validate(d, max_bad_audio=5)


def test_damage_inside_a_flac_needs_full_decoding(tmp_path):
    d = write_dir(tmp_path)
    garbled = garble_middle(flac(audio_of(d, 2)))
    point(d, 2, garbled)
    # Its header and its last samples are intact: the header check passes it...
    assert "spk-u1" in validate(d)
    # ... but training reads it with soundfile, which fails on it.
    with pytest.raises(soundfile.LibsndfileError):
        soundfile.read(garbled)
    with pytest.raises(DataDirError, match=rf"wav\.scp:2: audio '{re.escape(str(garbled))}' is corrupt: it does not "
                                           r"decode to its end"):
        validate(d, check_audio="full")
    dst = tmp_path / "dst"
    assert filter_by_duration(d, dst, 0.1, 30, max_bad_audio=1, check_audio="full") == (3, 0)
    assert (dst / "bad_audio.txt").read_text().startswith(f"{d}/wav.scp:2\t{garbled}\tis corrupt")


def test_filter_leaves_out_unreadable_audio_within_max_bad_audio(tmp_path, capsys):
    d = write_dir(tmp_path, n=5)
    audio_of(d, 2).unlink()
    cut(audio_of(d, 4), 0.5)
    validate_data_dir.main([str(d), "--max_bad_audio", "2"])
    out, err = capsys.readouterr()
    assert f"WARNING: {d}: 2 audio files cannot be read, within --max_bad_audio 2" in err
    assert f"{d}/wav.scp:2: audio '{audio_of(d, 2)}' does not exist" in err and f"{d}: ok, 3 utterances" in out

    dst = tmp_path / "dst"
    filter_data_dir.main([str(d), str(dst), "--max_bad_audio", "2"])
    out, err = capsys.readouterr()
    assert f"{dst}: kept 3 utterances, dropped 0 outside [0.1, 30.0] s and those of 2 unreadable audio files" in out
    assert f"{d}/wav.scp:4: audio '{audio_of(d, 4)}' is truncated" in err
    assert [line.split()[0] for line in (dst / "wav.scp").read_text().splitlines()] == ["spk-u0", "spk-u2", "spk-u4"]
    listed = [line.split("\t") for line in (dst / "bad_audio.txt").read_text().splitlines()]
    assert [(where, path) for where, path, _ in listed] == [(f"{d}/wav.scp:2", str(audio_of(d, 2))),
                                                            (f"{d}/wav.scp:4", str(audio_of(d, 4)))]
    assert listed[0][2] == "does not exist" and listed[1][2].startswith("is truncated: its header declares")
    assert sorted(validate(dst)) == ["spk-u0", "spk-u2", "spk-u4"]


def test_filter_over_max_bad_audio_fails_and_leaves_dst_as_it_was(tmp_path, capsys):
    d = write_dir(tmp_path, n=5)
    dst = tmp_path / "dst"
    filter_by_duration(d, dst, 0.1, 30)
    before = snapshot(dst)
    audio_of(d, 2).unlink()
    audio_of(d, 4).write_bytes(b"")
    with pytest.raises(SystemExit) as info:
        filter_data_dir.main([str(d), str(dst), "--max_bad_audio", "1"])
    message = str(info.value.code)
    listing = tmp_path / "dst.bad_audio.txt"
    assert (f"{d}: 2 audio files cannot be read, more than --max_bad_audio 1 allows (all listed in {listing}):"
            in message and f"Nothing was written to {dst}." in message)
    assert snapshot(dst) == before and not (tmp_path / "dst.tmp").exists()
    assert len(listing.read_text().splitlines()) == 2
    # Within the threshold again: the copy is made, the earlier failure's list goes.
    filter_by_duration(d, dst, 0.1, 30, max_bad_audio=2)
    assert len((dst / "bad_audio.txt").read_text().splitlines()) == 2 and not listing.exists()


REFUSED = {
    "sample_rate": lambda d: soundfile.write(audio_of(d, 2), noise(0.6), 8000),
    "stereo": lambda d: soundfile.write(audio_of(d, 2), noise(0.6, channels=2), RATE),
    "empty_transcript": lambda d: (d / "text").write_text((d / "text").read_text().replace("spk-u1 word 1", "spk-u1")),
    "unsorted_ids": lambda d: write_lines(d / "utt2spk", reversed((d / "utt2spk").read_text().splitlines())),
}


@pytest.mark.parametrize("case", REFUSED)
def test_filter_never_skips_errors_and_leaves_dst_as_it_was(tmp_path, case):
    d = write_dir(tmp_path)
    dst = tmp_path / "dst"
    filter_by_duration(d, dst, 0.1, 30)
    before = snapshot(dst)
    REFUSED[case](d)
    audio_of(d, 4).unlink()  # unreadable audio is reported beside the error, not in its place
    with pytest.raises(DataDirError) as info:
        filter_by_duration(d, dst, 0.1, 30, max_bad_audio=100)
    assert f"{d}: 1 problem:" in str(info.value) and "does not exist" in str(info.value)
    assert snapshot(dst) == before and not (tmp_path / "dst.tmp").exists()


def test_segmented_dir_leaves_out_every_segment_of_an_unreadable_recording(tmp_path):
    d = write_segmented_dir(tmp_path)
    recording = audio_of(d, 2)
    cut(recording, 0.3)
    with pytest.raises(DataDirError, match=rf"wav\.scp:2: audio '{re.escape(str(recording))}' is truncated"):
        validate(d)
    dst = tmp_path / "dst"
    assert filter_by_duration(d, dst, 0.1, 30, max_bad_audio=1) == (2, 0)
    assert [line.split()[0] for line in (dst / "wav.scp").read_text().splitlines()] == ["r0"]
    assert [line.split()[0] for line in (dst / "segments").read_text().splitlines()] == ["spk-r0-a", "spk-r0-b"]
    assert (dst / "bad_audio.txt").read_text().count("\n") == 1


def run_stages_2_3(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["./asr.sh", "--stage", "2", "--stop_stage", "3", "--python", sys.executable,
         "--datadir", str(tmp_path / "data"), "--dumpdir", str(tmp_path / "dump"), "--expdir", str(tmp_path / "exp"),
         "--train_set", "train", "--valid_set", "dev", "--test_sets", "test", *args],
        cwd=RECIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"), capture_output=True, text=True, timeout=300,
    )


def test_asr_sh_passes_max_bad_audio_and_fs_to_stages_2_and_3(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "dev", "test"):
        write_dir(data, n=3, name=name)
    audio_of(data / "train", 2).unlink()
    refused = run_stages_2_3(tmp_path)
    assert refused.returncode != 0 and f"{data}/train/wav.scp:2: audio" in refused.stderr
    assert not (tmp_path / "dump").exists()

    proc = run_stages_2_3(tmp_path, "--max_bad_audio", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "within --max_bad_audio 1" in proc.stderr and "Stage 3:" in proc.stdout
    assert (tmp_path / "dump" / "raw" / "train" / "bad_audio.txt").read_text().startswith(f"{data}/train/wav.scp:2\t")
    # Test sets are decoded whole: none of their audio may be missing.
    audio_of(data / "test", 1).unlink()
    proc = run_stages_2_3(tmp_path, "--max_bad_audio", "1")
    assert proc.returncode != 0 and f"{data}/test/wav.scp:1: audio" in proc.stderr

    proc = run_stages_2_3(tmp_path, "--fs", "8000", "--stop_stage", "2")
    assert proc.returncode != 0 and "the recipe expects 8000 Hz (--fs)" in proc.stderr
