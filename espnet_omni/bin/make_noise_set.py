"""Write noise recordings for ESPnet's training-time noise augmentation (``noise_scp``).

    python -m espnet_omni.bin.make_noise_set --output_dir data/noise \\
        [--colours white pink brown] [--recordings 4] [--seconds 30] [--fs 16000] [--seed 0]

Writes ``<output_dir>/wav.scp`` and coloured-noise FLAC files in ``<output_dir>/audio``; a
training config then adds them at SNRs it draws, e.g. ``noise_scp: data/noise/wav.scp``,
``noise_apply_prob: 0.5``, ``noise_db_range: "0_10"`` (conf/ablation/train_noise.yaml).
"""

import argparse
from pathlib import Path


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--colours", nargs="+", default=["white", "pink", "brown"],
                        choices=["white", "pink", "brown"])
    parser.add_argument("--recordings", type=int, default=4, help="recordings per colour")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fs", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(cmd)
    if args.recordings < 1 or args.seconds <= 0:
        parser.error("--recordings and --seconds must be positive")

    from espnet_omni.synth.noisy_copy import write_noise_set

    count = write_noise_set(args.output_dir, args.colours, args.recordings, args.seconds, args.fs, args.seed)
    print(f"{args.output_dir}/wav.scp: {count} noise recordings of {args.seconds:g} s")


if __name__ == "__main__":
    main()
