#!/usr/bin/env bash
# Stage 1: the data dirs a run needs, in <data_dir>/:
#   * the benchmark test sets (librispeech_test_clean, ..., see --sets) from the corpora whose
#     folders db.sh names; a set whose corpus is missing is skipped with the path expected,
#     the others are still prepared, and a summary lists them all;
#   * the training sets of the paper's scale (librispeech_train_960, librispeech_dev,
#     libriheavy_{small,medium,large,dev}) from LIBRISPEECH, LIBRIHEAVY and LIBRILIGHT: no audio
#     copied; Libriheavy's dirs have a segments file (ESPnet reads them with
#     <dir>/segments,speech,kaldi_segments); missing corpora are reported as for the test sets;
#   * the generated corpus (train, dev, test_clean, test_accent, ...: eSpeak NG speech, nothing
#     downloaded), written to <audio_dir>, when any of its sets is asked for.
# Each is reused when its inputs have not changed.
set -euo pipefail

sets="train dev test_clean"
data_dir=data
audio_dir=downloads/omni_synth
nj=2
num_train=3000
num_dev=200
num_test=200
seed=0
python=python3
help_message="Usage: $0 [--sets \"train dev test_clean ...\"] [--data_dir D] [--audio_dir D] [--nj N] [--num_train N] [--num_dev N] [--num_test N] [--seed S] [--python PY]"

. ./path.sh
. ./db.sh
. utils/parse_options.sh

read -r -a benchmark_names <<< "$(${python} -c 'from espnet_omni.corpora.test_sets import TEST_SETS; print(*TEST_SETS)')"
read -r -a train_names <<< "$(${python} -c 'from espnet_omni.corpora.train_sets import TRAIN_SETS; print(*TRAIN_SETS)')"
read -r -a conditions <<< "$(${python} -c 'from espnet_omni.synth.speakers import CONDITIONS; print(*CONDITIONS)')"
benchmark=()
training=()
generate=false
for dset in ${sets}; do
    if [[ " ${benchmark_names[*]} " == *" ${dset} "* ]]; then
        benchmark+=("${dset}")
    elif [[ " ${train_names[*]} " == *" ${dset} "* ]]; then
        training+=("${dset}")
    elif [[ " ${conditions[*]} " == *" ${dset} "* ]]; then
        generate=true
    elif [ ! -d "${data_dir}/${dset}" ]; then
        echo "$0: ${dset} is neither a benchmark test set (${benchmark_names[*]}), a training set (${train_names[*]}) nor a set of the generated corpus, and ${data_dir}/${dset} does not exist" >&2
        exit 1
    fi
done

if "${generate}"; then  # all its sets: speakers are drawn disjoint across them
    ${python} -m espnet_omni.bin.make_corpus --audio_dir "${audio_dir}" --data_dir "${data_dir}" \
        --num_train "${num_train}" --num_dev "${num_dev}" --num_test "${num_test}" \
        --seed "${seed}" --nj "${nj}"
fi

if [ "${#benchmark[@]}" -gt 0 ]; then
    ${python} -m espnet_omni.bin.prepare_test_sets --data_dir "${data_dir}" \
        --db "LIBRISPEECH=${LIBRISPEECH}" --db "TEDLIUM3=${TEDLIUM3}" --db "WSJ0=${WSJ0}" \
        --db "COMMONVOICE=${COMMONVOICE}" --db "FLEURS=${FLEURS}" --db "VOXPOPULI=${VOXPOPULI}" \
        --db "AMI=${AMI}" --db "CHIME6=${CHIME6}" --db "EVAL2000=${EVAL2000}" "${benchmark[@]}"
fi

if [ "${#training[@]}" -gt 0 ]; then
    ${python} -m espnet_omni.bin.prepare_train_sets --data_dir "${data_dir}" \
        --db "LIBRISPEECH=${LIBRISPEECH}" --db "LIBRIHEAVY=${LIBRIHEAVY}" --db "LIBRILIGHT=${LIBRILIGHT}" \
        "${training[@]}"
fi
