"""Batched greedy CTC decoding of an ESPnet ASR model (CTC-only models, no LM).

    python -m espnet_omni.bin.asr_inference_ctc --asr_train_config exp/x/config.yaml \\
        --asr_model_file exp/x/valid.cer_ctc.ave.pth \\
        --data_path_and_name_and_type data/test/wav.scp,speech,sound \\
        [--key_file keys.scp] --output_dir out [--batch_size 16] [--ngpu 0] \\
        [--quantize_asr_model true [--quantize_modules Linear] [--quantize_dtype qint8]]

The data, model and output arguments are those of ``espnet2.bin.asr_inference``, and the
output has the same layout (``<output_dir>/1best_recog/{text,token,token_int}``). Decoding
takes the most likely token per frame, merges repeats and drops blanks. It decodes a padded
batch at once, where ``asr_inference`` runs a beam search one utterance at a time, and is
some ten times faster on CPU for CTC-only models. ``--quantize_asr_model`` applies torch's
dynamic quantization to the model's modules of the given types, as ``asr_inference`` does
(CPU only).
"""

import argparse
import logging
from itertools import groupby
from typing import List

import torch

import espnet_omni  # noqa: F401  (registers the classes)


def greedy_ctc(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int) -> List[List[int]]:
    """Best path: (B, T, V) scores and (B,) lengths -> token ids per utterance."""
    best = log_probs.argmax(dim=-1).tolist()
    return [[t for t, _ in groupby(ids[:n]) if t != blank] for ids, n in zip(best, lengths.tolist())]


def main(cmd=None) -> None:
    from espnet2.fileio.datadir_writer import DatadirWriter
    from espnet2.tasks.asr import ASRTask
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.text.token_id_converter import TokenIDConverter
    from espnet2.torch_utils.device_funcs import to_device
    from espnet2.utils.types import str2bool, str2triple_str, str_or_none

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_path_and_name_and_type", type=str2triple_str, action="append", required=True)
    parser.add_argument("--key_file", type=str_or_none)
    parser.add_argument("--asr_train_config", required=True)
    parser.add_argument("--asr_model_file", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--ngpu", type=int, default=0)
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--token_type", type=str_or_none, default=None, help="default: from the config")
    parser.add_argument("--bpemodel", type=str_or_none, default=None, help="default: from the config")
    parser.add_argument("--log_level", default="INFO")
    # As espnet2.bin.asr_inference.
    parser.add_argument("--quantize_asr_model", type=str2bool, default=False,
                        help="dynamically quantize the modules of --quantize_modules")
    parser.add_argument("--quantize_modules", type=str, nargs="*", default=["Linear"],
                        help="torch.nn module types to quantize")
    parser.add_argument("--quantize_dtype", default="qint8", choices=["float16", "qint8"])
    args = parser.parse_args(cmd)
    if args.quantize_asr_model and args.ngpu > 0:
        parser.error("--quantize_asr_model: dynamically quantized modules run on the CPU, use --ngpu 0")
    unknown = [name for name in args.quantize_modules if not hasattr(torch.nn, name)]
    if args.quantize_asr_model and unknown:
        parser.error(f"--quantize_modules: {unknown} are not torch.nn module types")
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")

    device = "cuda" if args.ngpu > 0 else "cpu"
    model, train_args = ASRTask.build_model_from_file(args.asr_train_config, args.asr_model_file, device)
    model.eval()
    if args.quantize_asr_model:
        logging.info(f"dynamically quantizing {args.quantize_modules} to {args.quantize_dtype}")
        model = torch.quantization.quantize_dynamic(
            model,
            qconfig_spec={getattr(torch.nn, name) for name in args.quantize_modules},
            dtype=getattr(torch, args.quantize_dtype),
        )
    token_type = args.token_type or train_args.token_type
    bpemodel = args.bpemodel or train_args.bpemodel
    tokenizer = build_tokenizer(token_type=token_type, bpemodel=bpemodel) if token_type else None
    converter = TokenIDConverter(token_list=model.token_list)

    loader = ASRTask.build_streaming_iterator(
        args.data_path_and_name_and_type,
        dtype="float32",
        batch_size=args.batch_size,
        key_file=args.key_file,
        num_workers=args.num_workers,
        preprocess_fn=ASRTask.build_preprocess_fn(train_args, False),
        collate_fn=ASRTask.build_collate_fn(train_args, False),
        inference=True,
    )
    count = 0
    with DatadirWriter(args.output_dir) as writer, torch.no_grad():
        for keys, batch in loader:
            batch = to_device(batch, device)
            encoded, encoded_lengths = model.encode(batch["speech"], batch["speech_lengths"])
            if isinstance(encoded, tuple):  # intermediate CTC outputs
                encoded = encoded[0]
            for key, ids in zip(keys, greedy_ctc(model.ctc.log_softmax(encoded), encoded_lengths, model.blank_id)):
                tokens = converter.ids2tokens(ids)
                best = writer["1best_recog"]
                best["token"][key] = " ".join(tokens)
                best["token_int"][key] = " ".join(map(str, ids))
                best["text"][key] = tokenizer.tokens2text(tokens) if tokenizer else " ".join(tokens)
            count += len(keys)
    logging.info(f"decoded {count} utterances into {args.output_dir}/1best_recog")


if __name__ == "__main__":
    main()
