"""Write a noisy copy of a data dir: the same utterance ids, noise added at a given SNR.

    python -m espnet_omni.bin.make_noisy_copy --data_dir data/dev --output_dir data/dev_pink5 \\
        [--snr 5] [--colour pink] [--seed 0]

For ``analyze_routing --noise_pair data/dev data/dev_pink5``: how many frames change expert
when the same speech is noisy. A plain ``wav.scp`` (paths, not commands) or a ``segments``
dir is read; the copy has its own FLAC files in ``<output_dir>/audio``.
"""

import argparse
import sys
from pathlib import Path


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, required=True)
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--snr", type=float, default=5.0, help="signal-to-noise ratio in dB")
    parser.add_argument("--colour", default="pink", choices=["white", "pink", "brown"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(cmd)
    if args.output_dir.resolve() == args.data_dir.resolve():
        parser.error("--output_dir must differ from --data_dir")

    from espnet_omni.data.kaldi_segments import SegmentsError
    from espnet_omni.synth.noisy_copy import write_noisy_copy

    try:
        count = write_noisy_copy(args.data_dir, args.output_dir, args.snr, args.colour, args.seed)
    except (SegmentsError, FileNotFoundError, RuntimeError) as err:  # soundfile raises RuntimeError
        sys.exit(f"ERROR: {err}")
    print(f"{args.data_dir} -> {args.output_dir}: {count} utterances with {args.colour} noise at {args.snr} dB SNR")


if __name__ == "__main__":
    main()
