"""The recipe's token inventory: a SentencePiece model trained on the training text and
ESPnet's token list written by ``espnet2.bin.tokenize_text``, as ESPnet's asr.sh makes them."""

import tempfile
from pathlib import Path


def make_token_list(text: Path, out_dir: Path, nbpe: int = 150, model_type: str = "unigram") -> Path:
    """Write ``<out_dir>/bpe.model`` and ``<out_dir>/tokens.txt``; returns the token list.

    ``text`` is a Kaldi text file (``utt words``). The list has ``<blank>`` first, ``<unk>``,
    the pieces by frequency and ``<sos/eos>`` last.
    """
    import sentencepiece
    from espnet2.bin.tokenize_text import main as tokenize_text

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as sentences:
        for line in text.read_text(encoding="utf-8").splitlines():
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                sentences.write(parts[1] + "\n")
    try:
        sentencepiece.SentencePieceTrainer.train(
            input=sentences.name, vocab_size=nbpe, model_type=model_type,
            model_prefix=str(out_dir / "bpe"), character_coverage=1.0,
            input_sentence_size=100000000, minloglevel=2,
        )
    finally:
        Path(sentences.name).unlink()
    tokens = out_dir / "tokens.txt"
    tokenize_text([
        "--token_type", "bpe", "--bpemodel", str(out_dir / "bpe.model"),
        "--input", str(text), "--output", str(tokens),
        "--field", "2-", "--cleaner", "none", "--g2p", "none", "--write_vocabulary", "true",
        "--add_symbol", "<blank>:0", "--add_symbol", "<unk>:1", "--add_symbol", "<sos/eos>:-1",
    ])
    return tokens
