"""Transcribe audio files with a trained or packed model.

    python -m espnet_omni.bin.transcribe --model MODEL FILE [FILE ...] \\
        [--output out.txt | --output out.jsonl --format jsonl] [--lm true|false] \\
        [--nbest N] [--beam_size 5] [--batch_size 16] [--device cpu|cuda] [--max_seconds 30]

MODEL: a packed zip, a Hugging Face / model-zoo name (``user/repo``), or an experiment folder
(``config.yaml`` and ``--model_file``, by default the first of valid.cer_ctc.ave.pth, ...).
FILE: an audio file in any format soundfile reads, at any sampling rate (resampled to the
model's), any number of channels (averaged); a folder (its audio files, recursively); or a
Kaldi ``wav.scp``. Long files are cut at pauses into segments of at most ``--max_seconds``.

Decoding: greedy CTC over batches of ``--batch_size`` segments when the model has no packed LM
(or ``--lm false``) and ``--nbest 1``; otherwise ESPnet's CTC prefix beam search (beam 5, LM
weight 1.5, length bonus 0.5: the recipe's), one segment at a time. Output: Kaldi text
(``utt hypothesis``) or JSON lines (``--format jsonl``: text, duration, decoding time,
segments with their start and end times and n-best lists). A file that is missing, unreadable,
empty or silent is reported on stderr by name and the others are still transcribed; the exit
status is 1 when any file failed.
"""

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from espnet2.utils.types import str2bool, str_or_none


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="packed zip, model-zoo name or experiment folder")
    parser.add_argument("--model_file", default=None, help="model file of an experiment folder")
    parser.add_argument("--cache_dir", type=Path, default=None,
                        help="where packed models are unpacked (default: ~/.cache/espnet_omni/models)")
    parser.add_argument("files", nargs="+", help="audio files, folders or wav.scp files")
    parser.add_argument("--output", type=Path, default=None, help="output file (default: stdout)")
    parser.add_argument("--format", choices=["text", "jsonl"], default="text")
    parser.add_argument("--lm", type=str2bool, default=None,
                        help="fuse the model's packed LM (default: when it has one)")
    parser.add_argument("--nbest", type=int, default=1)
    parser.add_argument("--beam_size", type=int, default=5)
    parser.add_argument("--lm_weight", type=float, default=1.5)
    parser.add_argument("--penalty", type=float, default=0.5, help="length bonus of beam search")
    parser.add_argument("--batch_size", type=int, default=16, help="segments per greedy batch")
    parser.add_argument("--max_seconds", type=float, default=30.0, help="longest segment")
    parser.add_argument("--device", type=str_or_none, default=None,
                        help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--progress", type=str2bool, default=None,
                        help="progress bar on stderr (default: when stderr is a terminal)")
    parser.add_argument("--log_level", default="WARNING")
    args = parser.parse_args(cmd)
    for name in ("nbest", "beam_size", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.nbest > args.beam_size:
        parser.error(f"--nbest {args.nbest} needs --beam_size of at least as many")
    if args.max_seconds < 2:
        parser.error(f"--max_seconds must be >= 2, got {args.max_seconds}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")

    # ESPnet prints notices to stdout while it loads (flash attention's absence): keep stdout for
    # the transcripts.
    with contextlib.redirect_stdout(sys.stderr):
        import torch
        from tqdm import tqdm

        from espnet_omni.audio_input import list_sources
        from espnet_omni.data.kaldi_segments import SegmentsError
        from espnet_omni.recipe.packed_model import ModelSourceError, resolve_model_files
        from espnet_omni.transcribe import BeamDecoder, GreedyDecoder, transcribe, write_text

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        sources = list_sources(args.files)
    except SegmentsError as err:
        sys.exit(f"ERROR: {err}")
    # Unpacked once per model: a Hub name is not downloaded again, a zip packed again is
    # unpacked again (espnet_omni.model_zoo).
    cache = args.cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "espnet_omni" / "models"
    source = str(Path(args.model).absolute()) if Path(args.model).exists() else args.model
    unpack_dir = cache / hashlib.md5(source.encode()).hexdigest()
    try:
        files = resolve_model_files(args.model, args.model_file, unpack_dir)
    except ModelSourceError as err:
        sys.exit(f"ERROR: {err}")
    if args.lm and files.lm_config is None:
        sys.exit(f"ERROR: --lm true: {args.model} has no packed LM")
    use_lm = files.lm_config is not None and args.lm is not False
    with contextlib.redirect_stdout(sys.stderr):
        if use_lm or args.nbest > 1:
            decoder = BeamDecoder(
                files.config, files.model, device,
                files.lm_config if use_lm else None, files.lm_model if use_lm else None,
                args.beam_size, args.lm_weight, args.penalty, args.nbest,
            )
            batch_size = 1
        else:
            decoder = GreedyDecoder(files.config, files.model, device)
            batch_size = args.batch_size
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    failed = 0
    try:
        # tqdm's disable=None: a bar only when stderr is a terminal.
        progress = tqdm(total=len(sources), unit="file", file=sys.stderr,
                        disable=None if args.progress is None else not args.progress)
        for result in transcribe(sources, decoder, decoder.rate, batch_size, args.max_seconds):
            progress.update()
            if result.error:
                failed += 1
                tqdm.write(f"ERROR: {result.error}", file=sys.stderr)
            if args.format == "jsonl":
                out.write(json.dumps(result.as_json(), ensure_ascii=False) + "\n")
            else:
                write_text(result, out)
            out.flush()
        progress.close()
    finally:
        if args.output:
            out.close()
    if failed:
        print(f"{failed} of {len(sources)} files failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
