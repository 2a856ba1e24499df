"""The recipe's token inventory: a SentencePiece model trained on the training text and
ESPnet's token list written by ``espnet2.bin.tokenize_text``, as ESPnet's asr.sh makes them.

Both files are made in a temporary folder beside the token dir and moved in when complete,
``tokens.txt`` last: a token dir with a ``tokens.txt`` holds a finished pair, and a failed or
killed run leaves the files already there as they were (or, killed while moving, without a
``tokens.txt``).
"""

import os
import re
import shutil
from pathlib import Path

# What SentencePiece's trainer says when the text cannot give nbpe pieces, or nbpe cannot hold
# the text's characters.
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")
# SentencePiece's messages start with the C++ source position and the failed check.
_INTERNAL = re.compile(r"^(?:Internal|Invalid argument): \S+\(\d+\) (?:\[.*?\] )?")

# Written by SentencePiece (bpe.model, bpe.vocab) and tokenize_text, moved in in this order.
FILES = ("bpe.model", "bpe.vocab", "tokens.txt")


class TokenListError(ValueError):
    """A token list that cannot be made from the text; the message names the text and what to do."""


def _explain(err: RuntimeError, text: Path, nbpe: int, model_type: str) -> str:
    message = str(err)
    too_high = _TOO_HIGH.search(message)
    if too_high:
        return (f"{text}: too little text for {nbpe} {model_type} units: SentencePiece can make at "
                f"most {too_high.group(2)} from it; give --nbpe {too_high.group(2)} or less, or more text")
    too_low = _TOO_LOW.search(message)
    if too_low:
        return (f"{text}: {nbpe} {model_type} units cannot hold the text's characters and "
                f"SentencePiece's own pieces: it needs at least {too_low.group(2)}; give --nbpe "
                f"{too_low.group(2)} or more")
    if "!sentences_.empty()" in message:
        return f"{text}: no transcripts to train SentencePiece on (each line is 'utt words')"
    return f"{text}: SentencePiece cannot make {nbpe} {model_type} units: {_INTERNAL.sub('', message)}"


def make_token_list(text: Path, out_dir: Path, nbpe: int = 150, model_type: str = "unigram") -> Path:
    """Write ``<out_dir>/bpe.model`` and ``<out_dir>/tokens.txt``; returns the token list.

    ``text`` is a Kaldi text file (``utt words``). The list has ``<blank>`` first, ``<unk>``,
    the pieces by frequency and ``<sos/eos>`` last. Raises :class:`TokenListError` when
    SentencePiece cannot make ``nbpe`` units from the text; ``out_dir`` is then unchanged.
    """
    import sentencepiece
    from espnet2.bin.tokenize_text import main as tokenize_text

    text, out_dir = Path(text), Path(out_dir)
    if not text.is_file():
        raise TokenListError(f"{text}: no such file (the training text, 'utt words' per line)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.with_name(f"{out_dir.name}.tmp")
    shutil.rmtree(work, ignore_errors=True)  # left by a killed run
    work.mkdir()
    try:
        sentences = work / "sentences.txt"
        with open(text, encoding="utf-8") as lines, open(sentences, "w", encoding="utf-8") as out:
            for line in lines:
                parts = line.split(maxsplit=1)
                if len(parts) == 2:
                    out.write(parts[1].rstrip("\n") + "\n")
        try:
            sentencepiece.SentencePieceTrainer.train(
                input=str(sentences), vocab_size=nbpe, model_type=model_type,
                model_prefix=str(work / "bpe"), character_coverage=1.0,
                input_sentence_size=100000000, minloglevel=2,
            )
        except RuntimeError as err:
            raise TokenListError(_explain(err, text, nbpe, model_type)) from None
        tokenize_text([
            "--token_type", "bpe", "--bpemodel", str(work / "bpe.model"),
            "--input", str(text), "--output", str(work / "tokens.txt"),
            "--field", "2-", "--cleaner", "none", "--g2p", "none", "--write_vocabulary", "true",
            "--add_symbol", "<blank>:0", "--add_symbol", "<unk>:1", "--add_symbol", "<sos/eos>:-1",
        ])
        out_dir.mkdir(exist_ok=True)
        # The old list goes first and the new one comes last, so that a kill in between never
        # leaves a tokens.txt beside a bpe.model it was not made from.
        (out_dir / "tokens.txt").unlink(missing_ok=True)
        for name in FILES:
            os.replace(work / name, out_dir / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir / "tokens.txt"
