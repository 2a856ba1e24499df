#!/usr/bin/env bash
# Stage 1: the default corpus, generated with eSpeak NG (nothing downloaded).
# Writes the audio to <audio_dir> and the data dirs <data_dir>/{train,dev,test_*}.
# Re-running with the same settings reuses the corpus (its manifest matches).
set -euo pipefail

data_dir=data
audio_dir=downloads/omni_synth
nj=2
num_train=3000
num_dev=200
num_test=200
seed=0
python=python3
help_message="Usage: $0 [--data_dir D] [--audio_dir D] [--nj N] [--num_train N] [--num_dev N] [--num_test N] [--seed S] [--python PY]"

. ./path.sh
. utils/parse_options.sh

${python} -m espnet_omni.bin.make_corpus --audio_dir "${audio_dir}" --data_dir "${data_dir}" \
    --num_train "${num_train}" --num_dev "${num_dev}" --num_test "${num_test}" \
    --seed "${seed}" --nj "${nj}"
