"""Training sets of the paper's scale from the official layouts: LibriSpeech 960 h and dev as
Kaldi dirs over the original FLACs, Libriheavy's lhotse manifests as ``segments`` dirs over
LibriLight recordings, ESPnet's ``kaldi_segments`` data type reading them (dataset, streaming
iterator, collect_stats), validation and filtering of segments dirs, errors naming file and line,
and memory that does not grow with the manifest."""

import gzip
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import CONF, REPO, run_module
from corpus_fixtures import write_libriheavy, write_librispeech
from espnet_omni.corpora.libriheavy import iter_manifest, librispeech_style
from espnet_omni.corpora.prepare import CorpusError
from espnet_omni.corpora.train_dir import write_train_set
from espnet_omni.corpora.train_sets import TRAIN_SETS, prepare_train_sets
from espnet_omni.data.kaldi_segments import SegmentsReader
from espnet_omni.recipe.data_dir import DataDirError, filter_by_duration, validate

# Speakers are disjoint across LibriSpeech's parts, as in the release.
PART_SPEAKERS = {
    "train-clean-100": (("19", "198"), ("26", "495")),
    "train-clean-360": (("100", "121669"),),
    "train-other-500": (("20", "205"),),
    "dev-clean": (("84", "121123"),),
    "dev-other": (("116", "288045"),),
}


def read_table(path: Path) -> dict:
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines())


def utt_of(cut_id: str, speaker: str) -> str:
    return f"{speaker}-{cut_id.replace('/', '-')}"


@pytest.fixture()
def librispeech(tmp_path):
    written = {}
    for part, speakers in PART_SPEAKERS.items():
        written[part] = write_librispeech(tmp_path / "corpora", part, speakers=speakers, per_chapter=2)
    return tmp_path / "corpora", written


@pytest.fixture()
def libriheavy(tmp_path):
    heavy, light = tmp_path / "libriheavy", tmp_path / "librilight"
    written = write_libriheavy(heavy, light, "small", speakers=("100", "2043"), files_per_speaker=2,
                               seconds=24.0, cuts_per_file=4)
    write_libriheavy(heavy, light, "dev", speakers=("3000",), seconds=20.0, cuts_per_file=3)
    return {"LIBRIHEAVY": str(heavy), "LIBRILIGHT": str(light)}, written


def test_registry_names_the_sets_and_their_db_variables():
    assert {name: t.variables for name, t in TRAIN_SETS.items()} == {
        "librispeech_train_960": ("LIBRISPEECH",), "librispeech_dev": ("LIBRISPEECH",),
        "libriheavy_small": ("LIBRIHEAVY", "LIBRILIGHT"), "libriheavy_medium": ("LIBRIHEAVY", "LIBRILIGHT"),
        "libriheavy_large": ("LIBRIHEAVY", "LIBRILIGHT"), "libriheavy_dev": ("LIBRIHEAVY", "LIBRILIGHT"),
    }


def test_librispeech_960_and_dev_point_at_the_official_flacs(librispeech, tmp_path):
    root, written = librispeech
    data = tmp_path / "data"
    outcomes = prepare_train_sets(["librispeech_train_960", "librispeech_dev"], {"LIBRISPEECH": str(root)}, data)
    assert [o.status for o in outcomes] == ["prepared", "prepared"]
    for name, parts in (("librispeech_train_960", ("train-clean-100", "train-clean-360", "train-other-500")),
                        ("librispeech_dev", ("dev-clean", "dev-other"))):
        d = data / name
        expected = {utt: value for part in parts for utt, value in written[part].items()}
        durations = validate(d)
        assert sorted(durations) == sorted(expected) and not (d / "segments").exists()
        wav, text, utt2dur = read_table(d / "wav.scp"), read_table(d / "text"), read_table(d / "utt2dur")
        for utt, (words, samples) in expected.items():
            spk, chapter, _ = utt.split("-")
            part = next(p for p in parts if utt in written[p])
            assert wav[utt] == str(root / "LibriSpeech" / part / spk / chapter / f"{utt}.flac")  # not copied
            assert text[utt] == words
            assert float(utt2dur[utt]) == pytest.approx(samples.shape[0] / 16000, abs=1e-3)
        assert not any(p.suffix == ".flac" for p in d.rglob("*"))
        assert json.loads((d / ".prepared").read_text())["utterances"] == len(expected)
    assert (data / "librispeech_dev" / "spk2utt").read_text() == (
        "116 116-288045-0000 116-288045-0001\n84 84-121123-0000 84-121123-0001\n")
    # Unchanged transcripts: nothing is written again.
    stamp = (data / "librispeech_dev" / ".prepared").stat().st_mtime_ns
    assert prepare_train_sets(["librispeech_dev"], {"LIBRISPEECH": str(root)}, data)[0].status == "up to date"
    assert (data / "librispeech_dev" / ".prepared").stat().st_mtime_ns == stamp


def test_libriheavy_is_a_segments_dir_whose_audio_is_the_recording_slice(libriheavy, tmp_path):
    db, written = libriheavy
    data = tmp_path / "data"
    outcomes = prepare_train_sets(["libriheavy_small", "libriheavy_dev"], db, data)
    assert [o.status for o in outcomes] == ["prepared", "prepared"]
    d = data / "libriheavy_small"
    assert sorted(p.name for p in d.iterdir()) == [
        ".prepared", "segments", "spk2utt", "text", "utt2dur", "utt2spk", "wav.scp"]
    durations = validate(d)
    segments = {u: v.split() for u, v in read_table(d / "segments").items()}
    wav, text = read_table(d / "wav.scp"), read_table(d / "text")
    assert len(wav) == 4 and len(segments) == len(written) == 16  # 4 recordings of 4 cuts each
    reader = SegmentsReader(d / "segments", dtype="int16")
    for cut_id, (start, duration, upper, audio) in written.items():
        utt = utt_of(cut_id, cut_id.split("/")[1])
        rec, seg_start, seg_end = segments[utt]
        assert wav[rec] == str(audio)
        assert float(seg_start) == start and float(seg_end) == pytest.approx(start + duration)
        assert text[utt] == upper and durations[utt] == pytest.approx(duration)
        whole, _ = soundfile.read(audio, dtype="int16")
        rate, samples = reader[utt]
        assert rate == 16000 and np.array_equal(samples, whole[round(start * 16000):round((start + duration) * 16000)])
    last = utt_of("small/2043/book_2043_1_librivox_64kb_mp3/01_chapter_64kb_3", "2043")
    assert read_table(d / "utt2spk")[last] == "2043"
    assert len(read_table(data / "libriheavy_dev" / "segments")) == 3
    assert prepare_train_sets(["libriheavy_small"], db, data)[0].status == "up to date"


def test_libriheavy_training_subsets_are_cumulative_over_the_disjoint_manifests(libriheavy, tmp_path):
    db, small = libriheavy
    medium = write_libriheavy(Path(db["LIBRIHEAVY"]), Path(db["LIBRILIGHT"]), "medium", speakers=("5000",),
                              files_per_speaker=1, seconds=12.0, cuts_per_file=2)
    data = tmp_path / "data"
    assert prepare_train_sets(["libriheavy_medium"], db, data)[0].status == "prepared"
    segments = read_table(data / "libriheavy_medium" / "segments")
    assert len(segments) == len(small) + len(medium) == 18
    assert {utt_of(c, c.split("/")[1]) for c in [*small, *medium]} == set(segments)
    outcome = prepare_train_sets(["libriheavy_large"], db, data)[0]  # no large manifest yet
    assert outcome.status == "skipped" and "libriheavy_cuts_large.jsonl.gz" in outcome.detail


def test_libriheavy_text_is_the_normalised_upper_case_form():
    cased = "Chapter 1, said \"Dorothy\": the mermaid's song!"
    assert librispeech_style(cased) == "CHAPTER 1 SAID DOROTHY THE MERMAID'S SONG"
    assert librispeech_style("  well—no... (sighs)  ") == "WELL NO SIGHS"


def test_espnet_reads_segments_through_its_dataset_and_the_inference_iterator(libriheavy, tmp_path):
    import espnet_omni  # noqa: F401  (registers kaldi_segments)
    from espnet2.tasks.asr import ASRTask
    from espnet2.train.collate_fn import CommonCollateFn
    from espnet2.train.dataset import DATA_TYPES, ESPnetDataset

    db, written = libriheavy
    prepare_train_sets(["libriheavy_small"], db, tmp_path / "data")
    d = tmp_path / "data" / "libriheavy_small"
    assert "kaldi_segments" in DATA_TYPES
    spec = [(str(d / "segments"), "speech", "kaldi_segments")]
    dataset = ESPnetDataset(spec)
    expected = {}
    for cut_id, (start, duration, upper, audio) in written.items():
        whole, _ = soundfile.read(audio, dtype="float32")
        expected[utt_of(cut_id, cut_id.split("/")[1])] = whole[round(start * 16000):round((start + duration) * 16000)]
    assert list(dataset) == sorted(expected)
    for utt, samples in expected.items():
        _, item = dataset[utt]
        assert item["speech"].dtype == np.float32 and np.array_equal(item["speech"], samples)
    # asr_inference and the greedy decoder build this iterator; forked workers open their own files.
    loader = ASRTask.build_streaming_iterator(
        spec, preprocess_fn=None, collate_fn=CommonCollateFn(float_pad_value=0.0, int_pad_value=-1),
        batch_size=1, dtype="float32", num_workers=2, inference=True,
    )
    seen = {}
    for keys, batch in loader:
        seen[keys[0]] = batch["speech"][0, :batch["speech_lengths"][0]].numpy()
    assert sorted(seen) == sorted(expected)
    assert all(np.array_equal(seen[u], expected[u]) for u in expected)


def test_reader_keeps_a_bounded_number_of_recordings_open(libriheavy, tmp_path):
    db, written = libriheavy
    prepare_train_sets(["libriheavy_small"], db, tmp_path / "data")
    reader = SegmentsReader(tmp_path / "data" / "libriheavy_small" / "segments", max_open=2)
    for utt in reader:
        reader[utt]
        assert len(reader._open_files) <= 2
    assert len({reader.get_path(u)[0] for u in reader}) == 4


def test_segments_dir_is_validated_and_filtered_keeping_wav_scp_consistent(libriheavy, tmp_path):
    db, _ = libriheavy
    prepare_train_sets(["libriheavy_small"], db, tmp_path / "data")
    src, dst = tmp_path / "data" / "libriheavy_small", tmp_path / "filtered"
    # Shorten every cut of one recording so that a duration filter drops them all.
    segments = (src / "segments").read_text().splitlines()
    dropped_rec = segments[0].split()[1]
    edited = []
    for line in segments:
        utt, rec, start, end = line.split()
        if rec == dropped_rec:
            end = f"{float(start) + 0.5:.2f}"
        edited.append(f"{utt} {rec} {start} {end}")
    (src / "segments").write_text("\n".join(edited) + "\n")
    assert filter_by_duration(src, dst, 1.0, 30.0) == (12, 4)
    assert dropped_rec not in read_table(dst / "wav.scp") and len(read_table(dst / "wav.scp")) == 3
    assert len(read_table(dst / "segments")) == 12
    assert all(float(v) == 5.25 for v in read_table(dst / "utt2dur").values())
    assert sorted(validate(dst)) == sorted(read_table(dst / "text"))

    first = (dst / "segments").read_text().split("\n", 1)[0].split()
    for line, message in (
        (f"{first[0]} {first[1]} 20.0 40.0", r"segments:1: segment 20.0-40.0 s of '.*' lies past its end \(24.000 s\)"),
        (f"{first[0]} nowhere 0.0 1.0", r"segments:1: recording 'nowhere' is not in wav.scp"),
        (f"{first[0]} {first[1]} 2.0 1.0", r"segments:1: segment 2.0-1.0 s is empty or negative"),
    ):
        (dst / "segments").write_text("\n".join([line] + (dst / "segments").read_text().splitlines()[1:]) + "\n")
        with pytest.raises(DataDirError, match=message):
            validate(dst)


def test_missing_corpora_recordings_and_bad_lines_are_named(libriheavy, librispeech, tmp_path):
    db, _ = libriheavy
    root, _ = librispeech
    data = tmp_path / "data"
    outcomes = {o.name: o for o in prepare_train_sets(
        ["libriheavy_small", "libriheavy_large", "librispeech_train_960"],
        {"LIBRIHEAVY": db["LIBRIHEAVY"], "LIBRILIGHT": "", "LIBRISPEECH": str(tmp_path / "nowhere")}, data)}
    assert outcomes["libriheavy_small"].detail == "LIBRIHEAVY/LIBRILIGHT: LIBRILIGHT is empty in db.sh"
    assert outcomes["librispeech_train_960"].detail == (
        f"LIBRISPEECH: expected the LibriSpeech train-clean-100 folder "
        f"{tmp_path}/nowhere/LibriSpeech/train-clean-100 (not found)")
    assert all(o.status == "skipped" for o in outcomes.values())
    outcomes = prepare_train_sets(["libriheavy_medium"], db, data)  # small is there, medium not
    assert outcomes[0].detail == (f"LIBRIHEAVY/LIBRILIGHT: expected the Libriheavy medium manifest "
                                  f"{db['LIBRIHEAVY']}/libriheavy_cuts_medium.jsonl.gz (not found)")

    # A recording the manifest names is missing: the manifest's line and the path expected.
    manifest = Path(db["LIBRIHEAVY"]) / "libriheavy_cuts_small.jsonl.gz"
    missing = Path(db["LIBRILIGHT"]) / "small" / "2043" / "book_2043_0_librivox_64kb_mp3" / "00_chapter_64kb.flac"
    missing.rename(missing.with_suffix(".bak"))
    outcome = prepare_train_sets(["libriheavy_small"], db, data)[0]
    assert outcome.status == "skipped"
    recording = "small/2043/book_2043_0_librivox_64kb_mp3/00_chapter_64kb"
    assert f"{manifest}:9: recording '{recording}': expected {missing} (not found)" in outcome.detail
    assert not (data / "libriheavy_small").exists() and not list(data.glob(".libriheavy_small*"))
    missing.with_suffix(".bak").rename(missing)

    # A line that is not a cut.
    lines = gzip.open(manifest, "rt").read().splitlines()
    lines[5] = '{"id": "broken", "start": 0'
    with gzip.open(manifest, "wt") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=f"{manifest}:6: not a lhotse cut"):
        list(iter_manifest(manifest, Path(db["LIBRILIGHT"])))

    # A LibriSpeech utterance whose FLAC is missing: the transcript's line.
    trans = root / "LibriSpeech" / "train-clean-360" / "100" / "121669" / "100-121669.trans.txt"
    (trans.parent / "100-121669-0001.flac").unlink()
    outcome = prepare_train_sets(["librispeech_train_960"], {"LIBRISPEECH": str(root)}, data)[0]
    assert outcome.status == "skipped"
    assert f"{trans}:2: cannot read {trans.parent}/100-121669-0001.flac" in outcome.detail


def _big_manifest(heavy: Path, light: Path, cuts: int) -> Path:
    """A manifest of ``cuts`` short cuts (lhotse objects) over one LibriLight-layout recording."""
    from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment

    written = write_libriheavy(heavy, light, "medium", speakers=("7",), seconds=20.0, cuts_per_file=1)
    _, _, _, audio = next(iter(written.values()))
    relative = "medium/7/book_7_0_librivox_64kb_mp3/00_chapter_64kb"
    recording = Recording(id=relative, sources=[AudioSource("file", [0], f"download/librilight/{relative}.flac")],
                          sampling_rate=16000, num_samples=320000, duration=20.0)

    def cut(i):
        start = round((i % 190) * 0.1, 2)
        sup = SupervisionSegment(id=f"{relative}_{i}", recording_id=relative, start=0.0, duration=1.0, speaker="7",
                                 custom={"texts": [f"Word {i}.", f"WORD {i}"], "pre_texts": ["", ""]})
        return MonoCut(id=f"{relative}_{i}", start=start, duration=1.0, channel=0, supervisions=[sup],
                       recording=recording)

    path = heavy / "libriheavy_cuts_small.jsonl.gz"
    CutSet.from_cuts(cut(i) for i in range(cuts)).to_file(path)
    return path


def test_preparation_streams_the_manifest_with_memory_that_does_not_grow(tmp_path):
    heavy, light = tmp_path / "libriheavy", tmp_path / "librilight"
    manifest = _big_manifest(heavy, light, 6000)
    # Lazy: the first utterances come out before a broken last line is read.
    lines = gzip.open(manifest, "rt").read().splitlines()
    with gzip.open(manifest, "wt") as f:
        f.write("\n".join(lines[:-1] + ["not json"]) + "\n")
    stream = iter_manifest(manifest, light)
    assert next(stream).utt_id == "7-medium-7-book_7_0_librivox_64kb_mp3-00_chapter_64kb_0"
    with pytest.raises(CorpusError, match=f"{manifest}:6000: not a lhotse cut"):
        list(stream)
    with gzip.open(manifest, "wt") as f:
        f.write("\n".join(lines) + "\n")

    from espnet_omni.corpora.libriheavy import list_small

    def peak(cuts: int) -> int:
        with gzip.open(manifest, "wt") as f:
            f.write("\n".join(lines[:cuts]) + "\n")
        os.utime(manifest, ns=(cuts, cuts))  # a new fingerprint: prepared again
        tracemalloc.start()
        write_train_set(f"set{cuts}", list_small([heavy, light]), tmp_path / "data")
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(read_table(tmp_path / "data" / f"set{cuts}" / "segments")) == cuts
        return size

    small, large = peak(1500), peak(6000)
    # 4x the cuts, the same peak (a list of the cuts would take ~4x): lhotse's lazy reader and
    # the external sort keep no per-utterance state in the process.
    assert large < 1.3 * small, (small, large)


@pytest.mark.timeout(900)
def test_collect_stats_training_and_both_decoders_read_a_segments_dir(libriheavy, tmp_path):
    db, _ = libriheavy
    data = tmp_path / "data"
    prepare_train_sets(["libriheavy_small", "libriheavy_dev"], db, data)
    chars = sorted({c for line in (data / "libriheavy_small" / "text").read_text().splitlines()
                    for c in line.split(maxsplit=1)[1] if c != " "} | {"'"})
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>", "<space>", *chars, "<sos/eos>"]) + "\n")
    common = ["--config", str(CONF / "tiny" / "omni_router.yaml"), "--token_type", "char",
              "--token_list", str(tokens), "--non_linguistic_symbols", "none", "--cleaner", "none",
              "--g2p", "none", "--use_preprocessor", "true", "--ngpu", "0", "--num_workers", "0"]
    data_args, key_args = [], []
    for kind, name in (("train", "libriheavy_small"), ("valid", "libriheavy_dev")):
        d = data / name
        keys = tmp_path / f"{kind}.keys"  # the contract: a segments dir's keys are segments' first column
        keys.write_text("".join(line.split()[0] + "\n" for line in (d / "segments").read_text().splitlines()))
        data_args += [f"--{kind}_data_path_and_name_and_type", f"{d}/segments,speech,kaldi_segments",
                      f"--{kind}_data_path_and_name_and_type", f"{d}/text,text,text"]
        key_args += [f"--{kind}_shape_file", str(keys)]
    run_module("espnet_omni.bin.asr_train", *common, *data_args, *key_args, "--collect_stats", "true",
               "--batch_type", "unsorted", "--output_dir", "stats", cwd=tmp_path)
    shapes = read_table(tmp_path / "stats" / "train" / "speech_shape")
    durations = read_table(data / "libriheavy_small" / "utt2dur")
    assert sorted(shapes) == sorted(durations)
    assert all(int(shapes[u]) == round(float(durations[u]) * 16000) for u in shapes)

    shape_args = [arg for kind in ("train", "valid") for name in ("speech_shape", "text_shape")
                  for arg in (f"--{kind}_shape_file", f"stats/{kind}/{name}")]
    run_module("espnet_omni.bin.asr_train", *common, *data_args, *shape_args, "--max_epoch", "1",
               "--fold_length", "80000", "--fold_length", "150", "--normalize", "global_mvn",
               "--normalize_conf", "stats_file=stats/train/feats_stats.npz", "--output_dir", "exp", cwd=tmp_path)
    dev = data / "libriheavy_dev"
    expected = set(read_table(dev / "segments"))
    model = ["--asr_train_config", "exp/config.yaml", "--asr_model_file", "exp/1epoch.pth",
             "--data_path_and_name_and_type", f"{dev}/segments,speech,kaldi_segments", "--ngpu", "0"]
    run_module("espnet_omni.bin.asr_inference", *model, "--batch_size", "1", "--ctc_weight", "1.0",
               "--beam_size", "1", "--lm_weight", "0.0", "--output_dir", "beam", cwd=tmp_path)
    run_module("espnet_omni.bin.asr_inference_ctc", *model, "--batch_size", "2", "--output_dir", "greedy",
               cwd=tmp_path)
    for out in ("beam", "greedy"):
        lines = (tmp_path / out / "1best_recog" / "token_int").read_text().splitlines()
        assert {line.split()[0] for line in lines} == expected, out


def test_data_sh_prepares_training_sets_and_reports_missing_corpora(libriheavy, librispeech, tmp_path):
    db, _ = libriheavy
    root, _ = librispeech
    recipe = REPO / "egs2" / "omni_asr" / "asr1"
    env = dict(os.environ, LIBRISPEECH=str(root), LIBRIHEAVY=db["LIBRIHEAVY"], LIBRILIGHT=db["LIBRILIGHT"])
    proc = subprocess.run(
        ["bash", "local/data.sh", "--python", sys.executable, "--data_dir", str(tmp_path / "data"),
         "--sets", "librispeech_dev libriheavy_small libriheavy_large"],
        cwd=recipe, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "libriheavy_small: prepared" in proc.stdout and "librispeech_dev: prepared" in proc.stdout
    assert "libriheavy_large: skipped (LIBRIHEAVY/LIBRILIGHT: expected the Libriheavy medium manifest" in proc.stdout
    assert (tmp_path / "data" / "libriheavy_small" / "segments").exists()
