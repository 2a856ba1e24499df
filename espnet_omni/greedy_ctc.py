"""Batched greedy (best-path) CTC decoding of an ESPnet ASR model.

Takes the most likely token per frame, merges repeats and drops blanks, for a padded batch at
once (``espnet2.bin.asr_inference`` runs a beam search one utterance at a time). The output
has the layout of ``asr_inference``: ``<output_dir>/1best_recog/{text,token,token_int}``.
"""

import logging
from itertools import groupby
from typing import List, Optional, Sequence, Tuple

import torch


def greedy_ctc(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int) -> List[List[int]]:
    """Best path: (B, T, V) scores and (B,) lengths -> token ids per utterance."""
    best = log_probs.argmax(dim=-1).tolist()
    return [[t for t, _ in groupby(ids[:n]) if t != blank] for ids, n in zip(best, lengths.tolist())]


def quantize(model: torch.nn.Module, module_types: Sequence[str], dtype: str) -> torch.nn.Module:
    """torch's dynamic quantization of the given ``torch.nn`` module types, as
    ``asr_inference --quantize_asr_model`` applies it (CPU only)."""
    return torch.quantization.quantize_dynamic(
        model, qconfig_spec={getattr(torch.nn, name) for name in module_types},
        dtype=getattr(torch, dtype),
    )


def load_ctc_model(
    asr_train_config: str,
    asr_model_file: str,
    device: str = "cpu",
    token_type: Optional[str] = None,
    bpemodel: Optional[str] = None,
):
    """(model in eval mode, training args, tokenizer or None, TokenIDConverter) of an ESPnet
    ASR model; ``token_type`` and ``bpemodel`` default to the training config's."""
    from espnet2.tasks.asr import ASRTask
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.text.token_id_converter import TokenIDConverter

    import espnet_omni  # noqa: F401  (registers the classes)

    model, train_args = ASRTask.build_model_from_file(asr_train_config, asr_model_file, device)
    model.eval()
    token_type = token_type or train_args.token_type
    bpemodel = bpemodel or train_args.bpemodel
    tokenizer = build_tokenizer(token_type=token_type, bpemodel=bpemodel) if token_type else None
    return model, train_args, tokenizer, TokenIDConverter(token_list=model.token_list)


def ids_to_text(ids: Sequence[int], tokenizer, converter) -> Tuple[str, List[str]]:
    """(text, tokens) of token ids."""
    tokens = converter.ids2tokens(ids)
    return (tokenizer.tokens2text(tokens) if tokenizer else " ".join(tokens)), tokens


def decode_to_dir(
    data_path_and_name_and_type: List[Tuple[str, str, str]],
    asr_train_config: str,
    asr_model_file: str,
    output_dir: str,
    key_file: Optional[str] = None,
    batch_size: int = 16,
    device: str = "cpu",
    num_workers: int = 1,
    token_type: Optional[str] = None,
    bpemodel: Optional[str] = None,
    quantize_modules: Optional[Sequence[str]] = None,
    quantize_dtype: str = "qint8",
) -> int:
    """Decode a data set with an ESPnet ASR model's CTC; returns the number of utterances.

    ``token_type`` and ``bpemodel`` default to the training config's; ``quantize_modules``
    (e.g. ``["Linear"]``) quantizes the model dynamically before decoding.
    """
    from espnet2.fileio.datadir_writer import DatadirWriter
    from espnet2.tasks.asr import ASRTask
    from espnet2.torch_utils.device_funcs import to_device

    model, train_args, tokenizer, converter = load_ctc_model(
        asr_train_config, asr_model_file, device, token_type, bpemodel
    )
    if quantize_modules:
        logging.info(f"dynamically quantizing {list(quantize_modules)} to {quantize_dtype}")
        model = quantize(model, quantize_modules, quantize_dtype)

    loader = ASRTask.build_streaming_iterator(
        data_path_and_name_and_type,
        dtype="float32",
        batch_size=batch_size,
        key_file=key_file,
        num_workers=num_workers,
        preprocess_fn=ASRTask.build_preprocess_fn(train_args, False),
        collate_fn=ASRTask.build_collate_fn(train_args, False),
        inference=True,
    )
    count = 0
    with DatadirWriter(output_dir) as writer, torch.no_grad():
        for keys, batch in loader:
            batch = to_device(batch, device)
            encoded, encoded_lengths = model.encode(batch["speech"], batch["speech_lengths"])
            if isinstance(encoded, tuple):  # intermediate CTC outputs
                encoded = encoded[0]
            best_paths = greedy_ctc(model.ctc.log_softmax(encoded), encoded_lengths, model.blank_id)
            for key, ids in zip(keys, best_paths):
                text, tokens = ids_to_text(ids, tokenizer, converter)
                best = writer["1best_recog"]
                best["token"][key] = " ".join(tokens)
                best["token_int"][key] = " ".join(map(str, ids))
                best["text"][key] = text
            count += len(keys)
    return count
