"""Train a SentencePiece model on a text file and write ESPnet's token list.

    python -m espnet_omni.bin.make_token_list --text dump/raw/train/text --nbpe 150 \\
        --out_dir data/token_list/bpe_unigram150

Writes ``bpe.model`` (SentencePiece unigram, ``--model_type``) and ``tokens.txt``
(``<blank>`` first, ``<unk>``, the pieces by frequency, ``<sos/eos>`` last) with ESPnet's own
``espnet2.bin.tokenize_text``, as ESPnet's asr.sh does. Exits non-zero, naming the text and
the ``--nbpe`` it supports, when SentencePiece cannot make that many units from it; the files
already in ``--out_dir`` are then left as they are.
"""

import argparse
from pathlib import Path

from espnet_omni.recipe.token_list import TokenListError, make_token_list


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, required=True, help="Kaldi text file (utt words)")
    parser.add_argument("--out_dir", type=Path, required=True)
    parser.add_argument("--nbpe", type=int, default=150)
    parser.add_argument("--model_type", default="unigram", choices=["unigram", "bpe", "char", "word"])
    args = parser.parse_args(cmd)
    try:
        tokens = make_token_list(args.text, args.out_dir, args.nbpe, args.model_type)
    except TokenListError as err:
        raise SystemExit(f"ERROR: {err}") from None
    print(f"{tokens}: {len(tokens.read_text().splitlines())} tokens")


if __name__ == "__main__":
    main()
