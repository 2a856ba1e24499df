"""Score decoding results: normalised WER per test set with sclite or the Python scorer.

    python -m espnet_omni.bin.score --ref data/test_clean --hyp exp/asr_x/decode/test_clean \\
        [--ref ... --hyp ...] [--scorer auto|sclite|python]

For each pair, reads ``<ref>/text``, ``<ref>/utt2spk``, ``<ref>/glm`` when the data dir has one
(Hub5'00's scoring rules) and ``<hyp>/text``, and writes
``<hyp>/score_wer/{ref.trn,hyp.trn,utt_errors.tsv,result.txt}``.
"""

import argparse
import sys
from pathlib import Path

from espnet_omni.recipe.scoring import score_dir, wer


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", type=Path, action="append", required=True, help="data dir")
    parser.add_argument("--hyp", type=Path, action="append", required=True, help="decode dir")
    parser.add_argument("--scorer", default="auto", choices=["auto", "sclite", "python"])
    args = parser.parse_args(cmd)
    if len(args.ref) != len(args.hyp):
        parser.error("give one --hyp per --ref")
    for ref, hyp in zip(args.ref, args.hyp):
        for path in (ref / "text", ref / "utt2spk", hyp / "text"):
            if not path.exists():
                sys.exit(f"ERROR: {path}: missing")
        glm = ref / "glm" if (ref / "glm").exists() else None  # written by the test set's preparation
        errors, scorer = score_dir(ref / "text", hyp / "text", ref / "utt2spk", hyp / "score_wer", args.scorer, glm)
        print(f"{hyp}: WER {wer(errors):.2f}% over {len(errors)} utterances ({scorer})")


if __name__ == "__main__":
    main()
