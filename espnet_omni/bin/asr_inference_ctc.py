"""Batched greedy CTC decoding of an ESPnet ASR model (CTC-only models, no LM).

    python -m espnet_omni.bin.asr_inference_ctc --asr_train_config exp/x/config.yaml \\
        --asr_model_file exp/x/valid.cer_ctc.ave.pth \\
        --data_path_and_name_and_type data/test/wav.scp,speech,sound \\
        [--key_file keys.scp] --output_dir out [--batch_size 16] [--ngpu 0] \\
        [--quantize_asr_model true [--quantize_modules Linear] [--quantize_dtype qint8]]

The data, model and output arguments are those of ``espnet2.bin.asr_inference``, and the
output has the same layout (``<output_dir>/1best_recog/{text,token,token_int}``). It decodes a
padded batch at once, where ``asr_inference`` runs a beam search one utterance at a time, and
is some ten times faster on CPU for CTC-only models. ``--quantize_asr_model`` applies torch's
dynamic quantization to the model's modules of the given types, as ``asr_inference`` does
(CPU only).
"""

import argparse
import logging

from espnet2.utils.types import str2bool, str2triple_str, str_or_none


def main(cmd=None) -> None:
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

    import torch

    from espnet_omni.greedy_ctc import decode_to_dir

    unknown = [name for name in args.quantize_modules if not hasattr(torch.nn, name)]
    if args.quantize_asr_model and unknown:
        parser.error(f"--quantize_modules: {unknown} are not torch.nn module types")
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    count = decode_to_dir(
        args.data_path_and_name_and_type, args.asr_train_config, args.asr_model_file,
        args.output_dir, key_file=args.key_file, batch_size=args.batch_size,
        device="cuda" if args.ngpu > 0 else "cpu", num_workers=args.num_workers,
        token_type=args.token_type, bpemodel=args.bpemodel,
        quantize_modules=args.quantize_modules if args.quantize_asr_model else None,
        quantize_dtype=args.quantize_dtype,
    )
    logging.info(f"decoded {count} utterances into {args.output_dir}/1best_recog")


if __name__ == "__main__":
    main()
