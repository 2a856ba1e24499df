#!/usr/bin/env bash
# CTC ASR recipe for espnet-omni: train and compare MoE encoders (omni_router, switch) with
# their dense twin, using the pip-installed ESPnet only (no ESPnet checkout, no Kaldi).
#
# Stages:
#   1  data preparation (local/data.sh): the generated corpus, and the benchmark test sets
#      (librispeech_test_clean, ..., swbd_eval2000) from the corpus folders db.sh names
#   2  validation of every data dir
#   3  duration filtering of the training and validation sets
#   4  BPE model and token list
#   5  feature statistics (collect_stats, nj jobs), and the LM's token statistics (--use_lm)
#   6  training of each model in --models, and of the LM (--use_lm)
#   7  decoding of every test set (inference_nj jobs per set)
#   8  scoring (sclite when installed, the Python scorer otherwise)
#   9  results: <expdir>/RESULTS.md with relative WER reductions and bootstrap confidence intervals
#  10  packing of each model (zip for espnet_model_zoo)
#  11  upload of the packed models to Hugging Face (needs --hf_repo_prefix)
#
# Evaluation without training (as ESPnet's asr.sh): --skip_train true runs stages 1, 2 and 7-9
# on the test sets only, with the models of an existing --expdir (their RESULTS.md goes to
# <expdir>/eval/, beside the training run's), or with packed models (--download_model
# "a.zip b.zip" or model-zoo / Hugging Face names) unpacked into <expdir>/download/asr_<name>/,
# where their decodings and RESULTS.md go.
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}
min() { local a b; a=$1; for b in "$@"; do [ "$b" -lt "$a" ] && a=$b; done; echo "$a"; }

# General
stage=1
stop_stage=11
ngpu=0                # GPUs for training (0: CPU)
nj=2                  # parallel jobs for data preparation and statistics
inference_nj=2        # parallel decoding jobs per test set
python=python3
smoke=false           # every stage on a tiny corpus with tiny models (minutes)
skip_train=false      # only prepare, decode and score the test sets (stages 1, 2, 7-9)
train_jobs=1          # models trained at the same time
train_threads=0       # torch threads per training process (0: CPU cores / train_jobs)

# Folders
datadir=data          # Kaldi data dirs
dumpdir=dump          # filtered training data
expdir=exp            # statistics, models, decoding results, RESULTS.md
audio_dir=downloads/omni_synth   # audio of the generated corpus

# Data
train_set=train
valid_set=dev
test_sets="test_clean"
in_domain_sets="test_clean librispeech_test_clean"
num_train=3000        # generated corpus size (stage 1)
num_dev=200
num_test=200
corpus_seed=0
min_wav_duration=0.3
max_wav_duration=20

# Tokens
nbpe=150
bpe_type=unigram

# Models
models="dense_transformer switch omni_router"
asr_config_dir=conf   # <dir>/train_asr_<model>.yaml (or <dir>/<model>.yaml) per model
asr_args=             # extra arguments for every training run
inference_tool=greedy_ctc   # greedy_ctc (batched best path) or beam_search (ESPnet's asr_inference)
inference_config=conf/decode_ctc.yaml   # used by beam_search
inference_model=valid.cer_ctc.ave.pth
inference_args=
focus_model=omni_router
download_model=       # packed models to evaluate: .zip files, model-zoo or Hugging Face names

# Language model (shallow fusion in beam_search decoding)
use_lm=false
lm_config=conf/train_lm_rnn.yaml
lm_args=              # extra arguments for LM training
inference_lm=valid.loss.best.pth

# Packing and upload
hf_repo_prefix=       # e.g. myname/omni_asr_ -> myname/omni_asr_<model>

help_message=$(cat <<EOF
Usage: $0 [options]
  --stage N --stop_stage M   stages to run ($stage..$stop_stage)
  --ngpu N                   GPUs for training ($ngpu)
  --nj N                     data preparation / statistics jobs ($nj)
  --inference_nj N           decoding jobs per test set ($inference_nj)
  --models "a b c"           models to train and compare ($models)
  --skip_train true          only prepare, decode and score the test sets, with the models in
                             --expdir or those of --download_model
  --download_model "x.zip .."  packed models (zip, model-zoo or Hugging Face name) to evaluate
  --train_jobs N             models trained at the same time ($train_jobs)
  --asr_config_dir DIR       directory of train_asr_<model>.yaml ($asr_config_dir)
  --asr_args "..."           extra arguments for training
  --inference_tool T         greedy_ctc or beam_search ($inference_tool)
  --inference_config FILE    beam_search decoding config ($inference_config)
  --use_lm true|false        train a token LM and fuse it in beam_search decoding ($use_lm)
  --lm_config FILE           LM training config ($lm_config)
  --lm_args "..."            extra arguments for LM training
  --train_set X --valid_set Y --test_sets "..."   Kaldi data dirs under <datadir>; benchmark
                             test sets: ami_ihm_eval chime6_eval commonvoice_test fleurs_test
                             callhome_eval2000 swbd_eval2000 librispeech_test_clean
                             librispeech_test_other wsj_eval92 tedlium3_test voxpopuli_test
  --in_domain_sets "..."     test sets excluded from the out-of-domain average
  --num_train/--num_dev/--num_test N   generated corpus size ($num_train/$num_dev/$num_test)
  --nbpe N                   BPE units ($nbpe)
  --python PY                Python interpreter ($python)
  --datadir/--dumpdir/--expdir DIR   working folders ($datadir, $dumpdir, $expdir)
  --smoke true               every stage on a tiny corpus with tiny models, under smoke/
  --hf_repo_prefix P         stage 11 uploads to <P><model>
EOF
)

. ./path.sh
. utils/parse_options.sh
. utils/run_jobs.sh

if [ $# -ne 0 ]; then
    echo "$0: unexpected arguments: $*" >&2
    exit 1
fi

if "${smoke}"; then
    num_train=120; num_dev=20; num_test=10; nbpe=40
    datadir=smoke/data; dumpdir=smoke/dump; expdir=smoke/exp; audio_dir=smoke/audio
    asr_config_dir=../../../conf/tiny
    asr_args="--max_epoch 2 ${asr_args}"
    lm_args="--max_epoch 2 ${lm_args}"
    inference_model=valid.cer_ctc.best.pth
fi

export OMP_NUM_THREADS=1  # data jobs run in parallel; training sets its own below
token_dir=${datadir}/token_list/bpe_${bpe_type}${nbpe}
stats_dir=${expdir}/asr_stats_bpe${nbpe}
if [ "${inference_tool}" = greedy_ctc ]; then
    inference_tag=greedy_ctc
elif [ "${inference_tool}" = beam_search ]; then
    inference_tag=$(basename "${inference_config}" .yaml)
    inference_tag=${inference_tag#decode_}
else
    echo "$0: --inference_tool must be greedy_ctc or beam_search, got '${inference_tool}'" >&2
    exit 1
fi
# As ESPnet's asr.sh: extra decoding arguments name their own decoding directory.
if [ -n "${inference_args}" ]; then
    inference_tag+="$(echo "${inference_args}" | sed -e "s/--/\_/g" -e "s/[ |=/]//g")"
fi
lm_tag=$(basename "${lm_config}" .yaml)
lm_tag=lm_${lm_tag#train_lm_}
lm_exp=${expdir}/${lm_tag}
lm_stats_dir=${expdir}/lm_stats_bpe${nbpe}
if "${use_lm}"; then
    if [ "${inference_tool}" != beam_search ]; then
        echo "$0: --use_lm true needs --inference_tool beam_search (greedy CTC has no LM)" >&2
        exit 1
    fi
    inference_tag=${inference_tag}_${lm_tag}
fi
read -r -a model_list <<< "${models}"
read -r -a test_list <<< "${test_sets}"
asr_exps=${expdir}  # each model's experiment folder is <asr_exps>/asr_<model>
if [ -n "${download_model}" ]; then
    # Packed models are named after their file (asr_omni_router.zip -> omni_router) and
    # unpacked apart from trained ones, which they must never overwrite.
    skip_train=true
    asr_exps=${expdir}/download
    inference_model=packed.pth
    read -r -a download_list <<< "${download_model}"
    model_list=()
    for source in "${download_list[@]}"; do
        name=$(basename "${source}" .zip)
        name=${name#asr_}
        if [[ " ${model_list[*]} " == *" ${name} "* ]]; then
            echo "$0: two packed models are named '${name}': rename one of ${download_model}" >&2
            exit 1
        fi
        model_list+=("${name}")
    done
fi
decode_name=decode_${inference_tag}_${inference_model%.pth}
results=${asr_exps}/RESULTS.md
if "${skip_train}" && [ -z "${download_model}" ]; then
    results=${expdir}/eval/RESULTS.md  # the training run's RESULTS.md stays as it is
fi

config_of() {  # train_asr_<model>.yaml, or <model>.yaml as in the package's conf/<size>/
    if [ -f "${asr_config_dir}/train_asr_$1.yaml" ]; then
        echo "${asr_config_dir}/train_asr_$1.yaml"
    else
        echo "${asr_config_dir}/$1.yaml"
    fi
}
for model in "${model_list[@]}"; do
    if ! "${skip_train}" && [ ! -f "$(config_of "${model}")" ]; then
        echo "$0: no config $(config_of "${model}") for model '${model}'" >&2
        exit 1
    fi
done

data_args() {  # <kind> <dir>: ESPnet's data arguments for a data dir
    echo "--$1_data_path_and_name_and_type $2/wav.scp,speech,sound --$1_data_path_and_name_and_type $2/text,text,text"
}

split_keys() {  # <scp> <out_dir> <parts>: first column split into <out_dir>/keys.<n>.scp
    local scp=$1 out=$2 parts=$3 total
    total=$(wc -l < "${scp}")
    parts=$(min "${parts}" "${total}")
    mkdir -p "${out}"
    rm -f "${out}"/keys.*.scp
    awk -v n="${parts}" -v total="${total}" -v out="${out}" \
        '{ print $1 > (out "/keys." (int((NR - 1) * n / total) + 1) ".scp") }' "${scp}"
    echo "${parts}"
}

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    log "Stage 1: data preparation"
    data_sets=${test_sets}
    "${skip_train}" || data_sets="${train_set} ${valid_set} ${data_sets}"
    local/data.sh --sets "${data_sets}" --data_dir "${datadir}" --audio_dir "${audio_dir}" --nj "${nj}" --num_train "${num_train}" --num_dev "${num_dev}" \
        --num_test "${num_test}" --seed "${corpus_seed}" --python "${python}"
fi

# A test set stage 1 could not prepare (its corpus is not on disk) is left out of the later
# stages; the results table marks its column as not evaluated.
if [ "${stop_stage}" -ge 2 ]; then
    prepared=()
    for dset in "${test_list[@]}"; do
        if [ -f "${datadir}/${dset}/wav.scp" ]; then
            prepared+=("${dset}")
        else
            log "Left out: ${dset} (no ${datadir}/${dset}/wav.scp; stage 1 says why)"
        fi
    done
    if [ "${#prepared[@]}" -eq 0 ]; then
        echo "$0: none of the test sets (${test_sets}) is prepared in ${datadir}" >&2
        exit 1
    fi
    test_list=("${prepared[@]}")
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    to_validate=("${test_list[@]/#/${datadir}/}")
    "${skip_train}" || to_validate=("${datadir}/${train_set}" "${datadir}/${valid_set}" "${to_validate[@]}")
    log "Stage 2: validating ${to_validate[*]}"
    ${python} -m espnet_omni.bin.validate_data_dir "${to_validate[@]}"
fi

if "${skip_train}" && [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 3 ]; then
    log "Stages 3-6 skipped (--skip_train true): decoding with the models in ${asr_exps}"
fi

if ! "${skip_train}" && [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    log "Stage 3: keeping ${min_wav_duration}-${max_wav_duration} s utterances of ${train_set}, ${valid_set}"
    for dset in "${train_set}" "${valid_set}"; do
        ${python} -m espnet_omni.bin.filter_data_dir --min_seconds "${min_wav_duration}" \
            --max_seconds "${max_wav_duration}" "${datadir}/${dset}" "${dumpdir}/raw/${dset}"
    done
fi

if ! "${skip_train}" && [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    log "Stage 4: ${bpe_type} model with ${nbpe} units and token list in ${token_dir}"
    ${python} -m espnet_omni.bin.make_token_list --text "${dumpdir}/raw/${train_set}/text" \
        --nbpe "${nbpe}" --model_type "${bpe_type}" --out_dir "${token_dir}"
fi

token_args="--token_type bpe --bpemodel ${token_dir}/bpe.model --token_list ${token_dir}/tokens.txt \
--non_linguistic_symbols none --cleaner none --g2p none --use_preprocessor true"

bpe_shapes() {  # <stats_dir>: text_shape.bpe (lengths + vocabulary size) for train and valid
    local vocab_size dset
    vocab_size=$(wc -l < "${token_dir}/tokens.txt")
    for dset in train valid; do
        awk -v v="${vocab_size}" '{ print $0 "," v }' "$1/${dset}/text_shape" > "$1/${dset}/text_shape.bpe"
    done
}

if ! "${skip_train}" && [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    log "Stage 5: feature statistics in ${stats_dir} (${nj} jobs)"
    first_config=$(config_of "${model_list[0]}")
    # Built in a temporary folder and swapped in at the end: a failed re-run keeps the old one.
    work=${stats_dir}.tmp
    rm -rf "${work}"
    n_train=$(split_keys "${dumpdir}/raw/${train_set}/wav.scp" "${work}/logdir/train" "${nj}")
    n_valid=$(split_keys "${dumpdir}/raw/${valid_set}/wav.scp" "${work}/logdir/valid" "${n_train}")
    if [ "${n_valid}" -lt "${n_train}" ]; then
        echo "$0: ${valid_set} has fewer utterances than --nj ${nj}" >&2
        exit 1
    fi
    # shellcheck disable=SC2046,SC2086
    run_jobs "${n_train}" "${work}/logdir/stats.JOB.log" \
        ${python} -m espnet_omni.bin.asr_train --collect_stats true --ngpu 0 --num_workers 0 \
            --config "${first_config}" ${token_args} --batch_type unsorted \
            $(data_args train "${dumpdir}/raw/${train_set}") $(data_args valid "${dumpdir}/raw/${valid_set}") \
            --train_shape_file "${work}/logdir/train/keys.JOB.scp" \
            --valid_shape_file "${work}/logdir/valid/keys.JOB.scp" \
            --output_dir "${work}/logdir/stats.JOB"
    stats_inputs=()
    for n in $(seq 1 "${n_train}"); do stats_inputs+=(--input_dir "${work}/logdir/stats.${n}"); done
    ${python} -m espnet2.bin.aggregate_stats_dirs "${stats_inputs[@]}" --output_dir "${work}"
    bpe_shapes "${work}"
    rm -rf "${stats_dir}"
    mv "${work}" "${stats_dir}"

    if "${use_lm}"; then
        log "Stage 5: LM token statistics in ${lm_stats_dir}"
        work=${lm_stats_dir}.tmp
        rm -rf "${work}"
        mkdir -p "${work}"
        for dset in "${train_set}" "${valid_set}"; do
            cut -d' ' -f1 "${dumpdir}/raw/${dset}/text" > "${work}/${dset}.keys"
        done
        # shellcheck disable=SC2086
        ${python} -m espnet_omni.bin.lm_train --collect_stats true --ngpu 0 --num_workers 0 \
            --config "${lm_config}" ${token_args} \
            --train_data_path_and_name_and_type "${dumpdir}/raw/${train_set}/text,text,text" \
            --valid_data_path_and_name_and_type "${dumpdir}/raw/${valid_set}/text,text,text" \
            --train_shape_file "${work}/${train_set}.keys" --valid_shape_file "${work}/${valid_set}.keys" \
            --output_dir "${work}" > "${work}/stats.log" 2>&1
        bpe_shapes "${work}"
        rm -rf "${lm_stats_dir}"
        mv "${work}" "${lm_stats_dir}"
    fi
fi

train_model() {  # <model> <threads>: one ESPnet training run, logged to <exp>/train.log
    local model=$1 threads=$2 exp=${expdir}/asr_$1
    mkdir -p "${exp}"
    # shellcheck disable=SC2046,SC2086
    OMP_NUM_THREADS=${threads} ${python} -m espnet_omni.bin.asr_train \
        --config "$(config_of "${model}")" --ngpu "${ngpu}" ${token_args} \
        $(data_args train "${dumpdir}/raw/${train_set}") $(data_args valid "${dumpdir}/raw/${valid_set}") \
        --train_shape_file "${stats_dir}/train/speech_shape" \
        --train_shape_file "${stats_dir}/train/text_shape.bpe" \
        --valid_shape_file "${stats_dir}/valid/speech_shape" \
        --valid_shape_file "${stats_dir}/valid/text_shape.bpe" \
        --fold_length 80000 --fold_length 150 \
        --normalize global_mvn --normalize_conf "stats_file=${stats_dir}/train/feats_stats.npz" \
        --resume true --output_dir "${exp}" ${asr_args} > "${exp}/train.log" 2>&1
}

train_lm() {  # one ESPnet LM training run on one thread, logged to <lm_exp>/train.log
    mkdir -p "${lm_exp}"
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 ${python} -m espnet_omni.bin.lm_train --config "${lm_config}" --ngpu "${ngpu}" ${token_args} \
        --train_data_path_and_name_and_type "${dumpdir}/raw/${train_set}/text,text,text" \
        --valid_data_path_and_name_and_type "${dumpdir}/raw/${valid_set}/text,text,text" \
        --train_shape_file "${lm_stats_dir}/train/text_shape.bpe" \
        --valid_shape_file "${lm_stats_dir}/valid/text_shape.bpe" \
        --fold_length 150 --resume true --output_dir "${lm_exp}" ${lm_args} > "${lm_exp}/train.log" 2>&1
}

if ! "${skip_train}" && [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
    # Up to train_jobs models train at once; on CPUs, several single-threaded runs use the
    # cores better than one multi-threaded run of these small models.
    threads=${train_threads}
    [ "${threads}" -gt 0 ] || threads=$(( $(nproc) / $(min "${train_jobs}" "${#model_list[@]}") ))
    [ "${threads}" -gt 0 ] || threads=1
    runs=()
    for model in "${model_list[@]}"; do
        while [ "$(jobs -rp | wc -l)" -ge "${train_jobs}" ]; do wait -n || true; done
        log "Stage 6: training ${model} -> ${expdir}/asr_${model} (${threads} threads; log: ${expdir}/asr_${model}/train.log)"
        rm -f "${expdir}/asr_${model}/.failed"
        ( train_model "${model}" "${threads}" || touch "${expdir}/asr_${model}/.failed" ) &
        runs+=("${expdir}/asr_${model}")
    done
    if "${use_lm}"; then
        # The small LM trains beside the acoustic models (one thread, about 2 minutes).
        log "Stage 6: training the LM -> ${lm_exp} (log: ${lm_exp}/train.log)"
        rm -f "${lm_exp}/.failed"
        ( train_lm || touch "${lm_exp}/.failed" ) &
        runs+=("${lm_exp}")
    fi
    wait
    failed=0
    for run in "${runs[@]}"; do
        if [ -e "${run}/.failed" ]; then
            echo "ERROR: training ${run} failed; the end of ${run}/train.log:" >&2
            tail -n 30 "${run}/train.log" >&2
            failed=1
        fi
    done
    [ "${failed}" -eq 0 ] || exit 1
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
    if [ -n "${download_model}" ]; then
        for i in "${!download_list[@]}"; do
            log "Stage 7: unpacking ${download_list[$i]} -> ${asr_exps}/asr_${model_list[$i]}"
            ${python} -m espnet_omni.bin.unpack_model --model "${download_list[$i]}" \
                --exp_dir "${asr_exps}/asr_${model_list[$i]}" --model_file "${inference_model}"
        done
    fi
    # All test sets of a model are decoded in one pass of inference_nj jobs (keys prefixed
    # with "<set>/"), then split per set: every ESPnet process spends ~10 s importing.
    for model in "${model_list[@]}"; do
        exp=${asr_exps}/asr_${model}
        dir=${exp}/${decode_name}
        work=${dir}.tmp
        log "Stage 7: decoding ${test_sets} with ${exp}/${inference_model} -> ${dir}"
        rm -rf "${work}"
        mkdir -p "${work}"
        for dset in "${test_list[@]}"; do
            awk -v s="${dset}" '{ print s "/" $0 }' "${datadir}/${dset}/wav.scp"
        done > "${work}/wav.scp"
        parts=$(split_keys "${work}/wav.scp" "${work}/logdir" "${inference_nj}")
        if [ "${inference_tool}" = greedy_ctc ]; then
            decoder=(-m espnet_omni.bin.asr_inference_ctc --batch_size 16)
        else
            decoder=(-m espnet_omni.bin.asr_inference --batch_size 1 --config "${inference_config}")
        fi
        if "${use_lm}" && [ -d "${exp}/lm" ]; then  # the LM packed with the model
            decoder+=(--lm_train_config "${exp}/lm/config.yaml" --lm_file "${exp}/lm/model.pth")
        elif "${use_lm}"; then
            if [ ! -f "${lm_exp}/${inference_lm}" ]; then
                echo "$0: --use_lm true, but ${exp} has no lm/ and ${lm_exp}/${inference_lm} does not exist" \
                    "(decode without an LM: --use_lm false --inference_tool greedy_ctc)" >&2
                exit 1
            fi
            decoder+=(--lm_train_config "${lm_exp}/config.yaml" --lm_file "${lm_exp}/${inference_lm}")
        fi
        # shellcheck disable=SC2086
        run_jobs "${parts}" "${work}/logdir/asr_inference.JOB.log" \
            ${python} "${decoder[@]}" --ngpu 0 \
                --data_path_and_name_and_type "${work}/wav.scp,speech,sound" \
                --key_file "${work}/logdir/keys.JOB.scp" \
                --asr_train_config "${exp}/config.yaml" \
                --asr_model_file "${exp}/${inference_model}" \
                --output_dir "${work}/logdir/output.JOB" ${inference_args}
        for n in $(seq 1 "${parts}"); do
            cat "${work}/logdir/output.${n}/1best_recog/text"
        done > "${work}/text"
        for dset in "${test_list[@]}"; do
            mkdir -p "${work}/${dset}"
            awk -v p="${dset}/" 'index($0, p) == 1 { print substr($0, length(p) + 1) }' \
                "${work}/text" | sort -k1,1 > "${work}/${dset}/text"
        done
        rm -rf "${dir}"
        mv "${work}" "${dir}"
    done
fi

if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ]; then
    log "Stage 8: scoring"
    score_args=()
    for model in "${model_list[@]}"; do
        for dset in "${test_list[@]}"; do
            score_args+=(--ref "${datadir}/${dset}" --hyp "${asr_exps}/asr_${model}/${decode_name}/${dset}")
        done
    done
    ${python} -m espnet_omni.bin.score "${score_args[@]}"
fi

if [ "${stage}" -le 9 ] && [ "${stop_stage}" -ge 9 ]; then
    log "Stage 9: results -> ${results}"
    mkdir -p "$(dirname "${results}")"
    # shellcheck disable=SC2086
    ${python} -m espnet_omni.bin.make_results --exp_dirs "${model_list[@]/#/${asr_exps}/asr_}" \
        --decode_name "${decode_name}" --sets "${test_list[@]}" \
        --in_domain ${in_domain_sets} --focus "${focus_model}" --output "${results}"
fi

if ! "${skip_train}" && [ "${stage}" -le 10 ] && [ "${stop_stage}" -ge 10 ]; then
    for model in "${model_list[@]}"; do
        exp=${expdir}/asr_${model}
        log "Stage 10: packing ${exp} -> ${exp}/asr_${model}.zip"
        lm_files=()
        if "${use_lm}"; then
            lm_files=(--lm_train_config "${lm_exp}/config.yaml" --lm_file "${lm_exp}/${inference_lm}")
        fi
        ${python} -m espnet2.bin.pack asr --asr_train_config "${exp}/config.yaml" \
            --asr_model_file "${exp}/${inference_model}" "${lm_files[@]}" \
            --option "${token_dir}/bpe.model" --option "${stats_dir}/train/feats_stats.npz" \
            --option "${expdir}/RESULTS.md" --option "${exp}/images" --outpath "${exp}/asr_${model}.zip"
    done
fi

if ! "${skip_train}" && [ "${stage}" -le 11 ] && [ "${stop_stage}" -ge 11 ]; then
    if [ -z "${hf_repo_prefix}" ]; then
        log "Stage 11: skipped (give --hf_repo_prefix to upload to Hugging Face)"
    else
        for model in "${model_list[@]}"; do
            log "Stage 11: uploading ${expdir}/asr_${model}/asr_${model}.zip -> ${hf_repo_prefix}${model}"
            ${python} -m espnet_omni.bin.publish --model_zip "${expdir}/asr_${model}/asr_${model}.zip" \
                --repo_id "${hf_repo_prefix}${model}" --results "${expdir}/RESULTS.md"
        done
    fi
fi

log "Finished stages ${stage}-${stop_stage}"
