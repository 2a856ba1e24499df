"""Train a SentencePiece model on a text file and write ESPnet's token list.

    python -m espnet_omni.bin.make_token_list --text dump/raw/train/text --nbpe 150 \\
        --out_dir data/token_list/bpe_unigram150

Writes ``bpe.model`` (SentencePiece unigram, ``--model_type``) and ``tokens.txt``
(``<blank>`` first, ``<unk>``, the pieces by frequency, ``<sos/eos>`` last) with ESPnet's own
``espnet2.bin.tokenize_text``, as ESPnet's asr.sh does.
"""

import argparse
import tempfile
from pathlib import Path


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, required=True, help="Kaldi text file (utt words)")
    parser.add_argument("--out_dir", type=Path, required=True)
    parser.add_argument("--nbpe", type=int, default=150)
    parser.add_argument("--model_type", default="unigram", choices=["unigram", "bpe", "char", "word"])
    args = parser.parse_args(cmd)

    import sentencepiece
    from espnet2.bin.tokenize_text import main as tokenize_text

    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as sentences:
        for line in args.text.read_text(encoding="utf-8").splitlines():
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                sentences.write(parts[1] + "\n")
    sentencepiece.SentencePieceTrainer.train(
        input=sentences.name, vocab_size=args.nbpe, model_type=args.model_type,
        model_prefix=str(args.out_dir / "bpe"), character_coverage=1.0,
        input_sentence_size=100000000, minloglevel=2,
    )
    Path(sentences.name).unlink()
    tokenize_text([
        "--token_type", "bpe", "--bpemodel", str(args.out_dir / "bpe.model"),
        "--input", str(args.text), "--output", str(args.out_dir / "tokens.txt"),
        "--field", "2-", "--cleaner", "none", "--g2p", "none", "--write_vocabulary", "true",
        "--add_symbol", "<blank>:0", "--add_symbol", "<unk>:1", "--add_symbol", "<sos/eos>:-1",
    ])
    print(f"{args.out_dir / 'tokens.txt'}: {len((args.out_dir / 'tokens.txt').read_text().splitlines())} tokens")


if __name__ == "__main__":
    main()
