"""Generate the default corpus: eSpeak NG speech as Kaldi-style data dirs.

    python -m espnet_omni.bin.make_corpus --audio_dir downloads/omni_synth --data_dir data \\
        --num_train 3000 --num_dev 200 --num_test 200 --nj 2

Sets: train, dev, test_clean (unseen sentences and speakers of the training voice types) and
the out-of-domain test_accent, test_variant, test_rate, test_noise, test_babble, test_reverb.
The same seed gives byte-identical audio for any --nj; a corpus whose manifest matches is not
generated again.
"""

import argparse
import time

from espnet_omni.synth.corpus import CorpusConfig, generate
from espnet_omni.synth.speakers import CONDITIONS


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--audio_dir", required=True, help="where the FLAC files and manifest go")
    parser.add_argument("--data_dir", required=True, help="where the Kaldi data dirs go")
    parser.add_argument("--num_train", type=int, default=3000)
    parser.add_argument("--num_dev", type=int, default=200)
    parser.add_argument("--num_test", type=int, default=200, help="utterances per test set")
    parser.add_argument("--sets", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nj", type=int, default=1, help="worker processes")
    args = parser.parse_args(cmd)
    for name in ("num_train", "num_dev", "num_test", "nj"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")

    config = CorpusConfig(args.seed, args.num_train, args.num_dev, args.num_test, args.sets)
    start = time.time()
    manifest = generate(config, args.audio_dir, args.data_dir, num_workers=args.nj)
    for name, info in manifest["sets"].items():
        print(f"{name:14s} {info['utterances']:6d} utts {info['speakers']:4d} speakers {info['hours']:.3f} h")
    print(f"corpus ready in {time.time() - start:.1f} s: {args.data_dir}")


if __name__ == "__main__":
    main()
