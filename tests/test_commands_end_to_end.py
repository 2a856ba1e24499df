"""Train -> decode -> pack -> load from the model zoo, through the package's wrappers (two-process
CPU DDP: test_training_reliability.py)."""

import os
import shutil
import subprocess
import sys

import editdistance
import pytest

from conftest import run_module


@pytest.mark.timeout(900)
def test_train_decode_pack_and_load(prepared):
    root, train_args, dev = prepared
    run_module("espnet_omni.bin.asr_train", *train_args, "--max_epoch", "2",
               "--output_dir", "exp", cwd=root)
    exp = root / "exp"
    model_file = exp / "valid.cer_ctc.best.pth"
    assert model_file.exists()
    images = {p.name for p in (exp / "images").glob("*.png")}
    assert {"loss_lb.png", "loss_z.png", "route_entropy_b1.png", "route_load_b1_e0.png",
            "route_nmi.png"} <= images, images

    def decode(module, name, *options):
        """Decode the dev set one utterance at a time with the trained model into root/name."""
        run_module(
            module, "--batch_size", "1", "--ngpu", "0",
            "--data_path_and_name_and_type", f"{dev}/wav.scp,speech,sound",
            "--asr_train_config", "exp/config.yaml",
            "--asr_model_file", "exp/valid.cer_ctc.best.pth",
            "--output_dir", str(root / name), *options, cwd=root,
        )
        return root / name / "1best_recog"

    def assert_int8_close(quantized, reference):
        """int8 weights and activations move the scores a little: the same output up to a
        few characters or tokens."""
        assert set(quantized) == set(reference)
        errors = sum(editdistance.eval(quantized[utt], out) for utt, out in reference.items())
        assert errors <= 0.2 * sum(len(out) for out in reference.values()), (quantized, reference)

    def read_text(best):
        return dict((line.split(maxsplit=1) + [""])[:2] for line in (best / "text").read_text().splitlines())

    def read_token_ids(best):
        return {line.split()[0]: line.split()[1:] for line in (best / "token_int").read_text().splitlines()}

    beam_args = ("--ctc_weight", "1.0", "--beam_size", "1", "--lm_weight", "0.0")
    hyps = read_text(decode("espnet_omni.bin.asr_inference", "decode", *beam_args))
    assert any(hyps.values()), "the trained model decodes every utterance to nothing"
    assert set(hyps) == {line.split()[0] for line in (dev / "wav.scp").read_text().splitlines()}

    # ESPnet's int8 dynamic quantization for CPU decoding (every nn.Linear; the experts' stacked
    # weights stay float32).
    assert_int8_close(read_text(decode("espnet_omni.bin.asr_inference", "decode_int8", *beam_args,
                                       "--quantize_asr_model", "true")), hyps)

    # The best-path decoder's output is the model's own best path for each utterance. (In
    # batches of several, ESPnet's STFT sees padding in the last frames of shorter utterances.)
    batched = read_token_ids(decode("espnet_omni.bin.asr_inference_ctc", "decode_greedy"))
    check = root / "greedy_alone.py"
    check.write_text(
        "import sys, soundfile, torch\n"
        "import espnet_omni\n"
        "from espnet2.tasks.asr import ASRTask\n"
        "from espnet_omni.greedy_ctc import greedy_ctc\n"
        "model, _ = ASRTask.build_model_from_file('exp/config.yaml', 'exp/valid.cer_ctc.best.pth', 'cpu')\n"
        "model.eval()\n"
        "for line in open(sys.argv[1]):\n"
        "    utt, path = line.split()\n"
        "    speech = torch.tensor(soundfile.read(path, dtype='float32')[0])[None]\n"
        "    with torch.no_grad():\n"
        "        enc, lens = model.encode(speech, torch.tensor([speech.size(1)]))\n"
        "    ids = greedy_ctc(model.ctc.log_softmax(enc), lens, model.blank_id)[0]\n"
        "    print(utt, *ids)\n"
    )
    alone = subprocess.run([sys.executable, str(check), str(dev / "wav.scp")], cwd=root,
                           capture_output=True, text=True, check=True).stdout
    alone = {line.split()[0]: line.split()[1:] for line in alone.splitlines()
             if line.split()[:1] and line.split()[0] in hyps}
    assert batched == alone and len(alone) == len(hyps)
    assert any(alone.values())
    assert_int8_close(read_token_ids(decode("espnet_omni.bin.asr_inference_ctc", "decode_greedy_int8",
                                            "--quantize_asr_model", "true")), alone)

    run_module(
        "espnet2.bin.pack", "asr", "--asr_train_config", "exp/config.yaml",
        "--asr_model_file", "exp/valid.cer_ctc.best.pth",
        "--option", "stats/train/feats_stats.npz", "--outpath", "model.zip", cwd=root,
    )
    # Load back through the model zoo's local-zip path in a fresh process, with the
    # experiment folder gone.
    shutil.move(exp, root / "exp.moved")
    reload_script = root / "reload.py"
    reload_script.write_text(
        "import sys, soundfile\n"
        "import espnet_omni\n"
        "from espnet_model_zoo.downloader import ModelDownloader\n"
        "from espnet2.bin.asr_inference import Speech2Text\n"
        "d = ModelDownloader(cachedir=sys.argv[2]).download_and_unpack(sys.argv[1])\n"
        "s2t = Speech2Text(**d, device='cpu', ctc_weight=1.0, beam_size=1, lm_weight=0.0)\n"
        "for line in open(sys.argv[3]):\n"
        "    utt, path = line.split()\n"
        "    speech, _ = soundfile.read(path)\n"
        "    print(utt, s2t(speech)[0][0], sep='\\t')\n"
    )
    out = subprocess.run(
        [sys.executable, str(reload_script), str(root / "model.zip"), str(root / "zoo"),
         str(dev / "wav.scp")],
        capture_output=True, text=True, cwd=root, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    shutil.move(root / "exp.moved", exp)
    assert out.returncode == 0, out.stderr[-4000:]
    reloaded = dict(
        (line.split("\t")[0], line.split("\t")[1].strip())
        for line in out.stdout.splitlines() if "\t" in line
    )
    assert reloaded == hyps

    # The publishing step prepares the Hugging Face folder with a model card.
    run_module("espnet_omni.bin.publish", "--model_zip", "model.zip", "--repo_id", "someone/omni_tiny",
               "--dry_run", cwd=root)
    card = (root / "hf_model" / "README.md").read_text()
    assert "encoder: omni_router" in card and 'from_pretrained("someone/omni_tiny"' in card
    assert (root / "hf_model" / "exp" / "config.yaml").exists()
