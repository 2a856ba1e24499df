#!/usr/bin/env bash
# CTC ASR recipe for espnet-omni: train and compare MoE encoders (omni_router, switch) with
# their dense twin, using the pip-installed ESPnet only (no ESPnet checkout, no Kaldi).
#
# Stages:
#   0  preflight: parameters and GPU memory of each model's config (espnet_omni.bin.check_gpu_configs);
#      run when --stage 0 is given (run_librispeech.sh, run_libriheavy.sh do)
#   1  data preparation (local/data.sh): the generated corpus, and the benchmark test sets
#      (librispeech_test_clean, ..., swbd_eval2000) from the corpus folders db.sh names
#   2  validation of every data dir (every problem reported; --max_bad_audio unreadable files tolerated)
#   3  duration filtering of the training and validation sets (leaving out unreadable audio)
#   4  BPE model and token list
#   5  feature statistics (collect_stats, nj jobs), and the LM's token statistics (--use_lm)
#   6  training of each model in --models, and of the LM (--use_lm), once every config is checked;
#      a rerun resumes from the last epoch's checkpoint
#   7  decoding of every test set (inference_nj jobs per set; a rerun decodes only unfinished jobs)
#   8  scoring (sclite when installed, the Python scorer otherwise)
#   9  results: <expdir>/RESULTS.md with relative WER reductions and bootstrap confidence intervals
#  10  routing analysis of the MoE models on the validation and test sets (espnet_omni.bin.
#      analyze_routing): <expdir>/routing/ (routing.json, pictures) and RESULTS.md's Routing section
#  11  packing of each model (zip for espnet_model_zoo), with RESULTS.md and the routing analysis
#  12  upload of the packed models to Hugging Face (needs --hf_repo_prefix)
#
# Evaluation without training (as ESPnet's asr.sh): --skip_train true runs stages 1, 2 and 7-10
# on the test sets only, with the models of an existing --expdir (their RESULTS.md goes to
# <expdir>/eval/, beside the training run's), or with packed models (--download_model
# "a.zip b.zip" or model-zoo / Hugging Face names) unpacked into <expdir>/download/asr_<name>/,
# where their decodings, RESULTS.md and routing analysis go.
#
# Data dirs with a `segments` file (utterances cut from long recordings, e.g. Libriheavy) are
# read as <dir>/segments,speech,kaldi_segments (the recordings in <dir>/wav.scp beside it)
# instead of <dir>/wav.scp,speech,sound, in statistics, training and decoding.
#
# Training at scale (docs/recipe.md, "Training at scale"): --ngpu N GPUs per node, --num_nodes M
# nodes through torchrun rendezvous (--dist_launcher torchrun --rdzv_endpoint host:port, the
# same command on every node) or Slurm (--dist_launcher slurm inside an allocation; the launch
# prefix is train_cmd in cmd.sh); --num_splits_asr K (ESPnet's split of huge training lists);
# --speed_perturb_factors "0.9 1.0 1.1" (on the fly, see below); a rerun resumes training.
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}
min() { local a b; a=$1; for b in "$@"; do [ "$b" -lt "$a" ] && a=$b; done; echo "$a"; }

# General
stage=1
stop_stage=12
ngpu=0                # GPUs per node for training (0: CPU)
num_nodes=1           # nodes for training (> 1: --dist_launcher torchrun or slurm)
dist_launcher=auto    # auto (ESPnet's own processes on one node), torchrun or slurm
nproc_per_node=0      # training processes per node with torchrun (0: --ngpu, or 1 on CPU)
rdzv_endpoint=        # torchrun rendezvous host:port (a node every node can reach)
rdzv_id=              # torchrun rendezvous id (default: the experiment folder's name)
inference_ngpu=0      # GPUs per decoding job (0: CPU)
gpu_memory_gb=80      # stage 0 checks that each config fits GPUs of this memory
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
fs=16000              # sampling rate of the training audio (speed perturbation resamples at it)
max_bad_audio=0       # stages 2-3: unreadable audio files (missing, corrupt, empty) left out of each training / validation set
check_audio=header    # stage 3: header (headers and the last samples) or full (decode every file: reads the whole corpus)
speed_perturb_factors=   # e.g. "0.9 1.0 1.1": each training utterance at one of them (see stage 6)
num_splits_asr=1      # > 1: the training lists split in K parts, one read per epoch (ESPnet's)

# Tokens
nbpe=150
bpe_type=unigram
token_listdir=        # as ESPnet's: BPE model and token list in <token_listdir>/bpe_<bpe_type><nbpe> (default <datadir>/token_list)

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

# Routing analysis (stage 10)
routing_max_utts=1000       # utterances drawn from each validation / test set
routing_reference_utts=1000 # training utterances whose expert usage the sets are compared with
routing_noise_snr=5         # the validation set with pink noise at this SNR (dB): routing under noise

# Packing and upload
hf_repo_prefix=       # e.g. myname/omni_asr_ -> myname/omni_asr_<model>

help_message=$(cat <<EOF
Usage: $0 [options]
  --stage N --stop_stage M   stages to run ($stage..$stop_stage)
  --ngpu N                   GPUs per node for training ($ngpu)
  --num_nodes N              nodes for training ($num_nodes); with --dist_launcher torchrun or slurm
  --dist_launcher L          auto, torchrun or slurm ($dist_launcher)
  --nproc_per_node N         torchrun processes per node (0: --ngpu, or 1 on CPU)
  --rdzv_endpoint H:P        torchrun rendezvous endpoint (needed with --num_nodes > 1)
  --inference_ngpu N         GPUs per decoding job ($inference_ngpu)
  --gpu_memory_gb N          stage 0: GPU memory each config must fit ($gpu_memory_gb)
  --speed_perturb_factors "0.9 1.0 1.1"   speed perturbation of the training set (on the fly)
  --num_splits_asr K         split the training lists in K parts (huge corpora) ($num_splits_asr)
  --max_bad_audio N          unreadable audio files left out of each training / validation set
                             by stage 3, more stop stage 2 ($max_bad_audio)
  --check_audio header|full  stage 3: audio headers and ends, or every file decoded ($check_audio)
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
  --token_listdir DIR        BPE model and token list in DIR/bpe_<type><nbpe> (<datadir>/token_list)
  --python PY                Python interpreter ($python)
  --datadir/--dumpdir/--expdir DIR   working folders ($datadir, $dumpdir, $expdir)
  --smoke true               every stage on a tiny corpus with tiny models, under smoke/
  --routing_max_utts N       stage 10: utterances analysed per set ($routing_max_utts)
  --routing_reference_utts N stage 10: training utterances of the reference usage ($routing_reference_utts)
  --routing_noise_snr DB     stage 10: SNR of the noisy copy of the validation set ($routing_noise_snr)
  --hf_repo_prefix P         stage 12 uploads to <P><model>
EOF
)

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
. utils/run_jobs.sh

if [ $# -ne 0 ]; then
    echo "$0: unexpected arguments: $*" >&2
    exit 1
fi

if "${smoke}"; then
    num_train=120; num_dev=20; num_test=10; nbpe=40
    # Under smoke/ unless given (run_study.sh gives each seed its --expdir).
    if [ "${datadir}" = data ]; then datadir=smoke/data; fi
    if [ "${dumpdir}" = dump ]; then dumpdir=smoke/dump; fi
    if [ "${expdir}" = exp ]; then expdir=smoke/exp; fi
    audio_dir=smoke/audio
    if [ "${asr_config_dir}" = conf ]; then asr_config_dir=../../../conf/tiny; fi
    asr_args="--max_epoch 2 ${asr_args}"
    lm_args="--max_epoch 2 ${lm_args}"
    inference_model=valid.cer_ctc.best.pth
fi

export OMP_NUM_THREADS=1  # data jobs run in parallel; training sets its own below
token_dir=${token_listdir:-${datadir}/token_list}/bpe_${bpe_type}${nbpe}
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

# --speed_perturb_factors: ESPnet's asr.sh writes a copy of the training set per factor with
# sox (sp0.9-*, sp1.1-*). Without Kaldi and sox, and without tripling the data on disk, the same
# distribution is drawn on the fly by ESPnet's own preprocessor (espnet2.layers.augmentation,
# torchaudio resampling, training set only): each utterance is read at one of the factors,
# chosen uniformly. The shapes and feature statistics are those of the unperturbed audio.
speed_perturb_args=()
if [ -n "${speed_perturb_factors}" ]; then
    read -r -a _factors <<< "${speed_perturb_factors}"
    _effects=()
    for f in "${_factors[@]}"; do
        if ! awk -v f="${f}" 'BEGIN { exit !(f + 0 > 0 && f ~ /^[0-9.]+$/) }'; then
            echo "$0: --speed_perturb_factors: '${f}' is not a positive number" >&2
            exit 1
        fi
        awk -v f="${f}" 'BEGIN { exit !(f + 0 != 1) }' && _effects+=("[1.0, speed_perturb, {factor: ${f}}]")
    done
    if [ "${#_effects[@]}" -gt 0 ]; then
        _prob=$(awk -v n="${#_effects[@]}" -v t="${#_factors[@]}" 'BEGIN { printf "%.6f", n / t }')
        _joined=$(IFS=,; echo "${_effects[*]}")
        speed_perturb_args=(--preprocessor_conf "fs=${fs}"
            --preprocessor_conf "data_aug_effects=[${_joined}]"
            --preprocessor_conf "data_aug_num=[1, 1]" --preprocessor_conf "data_aug_prob=${_prob}")
    fi
fi

case "${dist_launcher}" in
    auto)
        if [ "${num_nodes}" -gt 1 ]; then
            echo "$0: --num_nodes ${num_nodes} needs --dist_launcher torchrun (with --rdzv_endpoint host:port) or slurm" >&2
            exit 1
        fi ;;
    torchrun)
        if [ "${num_nodes}" -gt 1 ] && [ -z "${rdzv_endpoint}" ]; then
            echo "$0: --dist_launcher torchrun with --num_nodes ${num_nodes} needs --rdzv_endpoint host:port (a node all nodes reach)" >&2
            exit 1
        fi ;;
    slurm)
        if [ -z "${SLURM_JOB_ID:-}" ]; then
            echo "$0: --dist_launcher slurm runs inside a Slurm allocation (sbatch/salloc with --nodes ${num_nodes}); see docs/recipe.md" >&2
            exit 1
        fi ;;
    *)
        echo "$0: --dist_launcher must be auto, torchrun or slurm, got '${dist_launcher}'" >&2
        exit 1 ;;
esac

speech_of() {  # <dir>: ESPnet's speech input of a data dir
    # With a segments file, wav.scp names whole recordings and each utterance is a segment of
    # one: the kaldi_segments type reads <dir>/segments and the wav.scp beside it.
    if [ -f "$1/segments" ]; then
        echo "$1/segments,speech,kaldi_segments"
    else
        echo "$1/wav.scp,speech,sound"
    fi
}
keys_of() {  # <dir>: the file whose first column lists the utterances of a data dir
    if [ -f "$1/segments" ]; then echo "$1/segments"; else echo "$1/wav.scp"; fi
}
data_args() {  # <kind> <dir>: ESPnet's data arguments for a data dir
    echo "--$1_data_path_and_name_and_type $(speech_of "$2") --$1_data_path_and_name_and_type $2/text,text,text"
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

if ! "${skip_train}" && [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
    configs=()
    for model in "${model_list[@]}"; do configs+=("$(config_of "${model}")"); done
    # Before hours of data preparation: a config that cannot fit the GPUs stops the run here.
    # ESPnet's batch_bins is the batch of all GPUs together: each holds its share. The token
    # list does not exist yet: the output layer is sized by --nbpe.
    num_gpus=$(( (ngpu > 0 ? ngpu : 1) * num_nodes ))
    log "Stage 0: preflight: ${configs[*]} on ${num_gpus} GPUs of ${gpu_memory_gb} GB"
    ${python} -m espnet_omni.bin.check_gpu_configs "${configs[@]}" --gpu_memory_gb "${gpu_memory_gb}" \
        --num_gpus "${num_gpus}" --vocab_size "${nbpe}"
fi

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
    # Stage 3 leaves out up to --max_bad_audio unreadable audio files of the training and
    # validation sets; test sets are decoded whole, so none is tolerated there. Every set is
    # checked before the stage fails, so that one run reports every problem.
    status=0
    if ! "${skip_train}"; then
        ${python} -m espnet_omni.bin.validate_data_dir --fs "${fs}" --max_bad_audio "${max_bad_audio}" \
            "${datadir}/${train_set}" "${datadir}/${valid_set}" || status=1
    fi
    ${python} -m espnet_omni.bin.validate_data_dir --fs "${fs}" "${test_list[@]/#/${datadir}/}" || status=1
    [ "${status}" -eq 0 ] || exit 1
fi

if "${skip_train}" && [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 3 ]; then
    log "Stages 3-6 skipped (--skip_train true): decoding with the models in ${asr_exps}"
fi

if ! "${skip_train}" && [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    log "Stage 3: keeping ${min_wav_duration}-${max_wav_duration} s utterances of ${train_set}, ${valid_set}"
    # A dir with segments keeps them (and the recordings they cut), durations are the segments'.
    for dset in "${train_set}" "${valid_set}"; do
        ${python} -m espnet_omni.bin.filter_data_dir --min_seconds "${min_wav_duration}" \
            --max_seconds "${max_wav_duration}" --fs "${fs}" --max_bad_audio "${max_bad_audio}" \
            --check_audio "${check_audio}" "${datadir}/${dset}" "${dumpdir}/raw/${dset}"
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
    n_train=$(split_keys "$(keys_of "${dumpdir}/raw/${train_set}")" "${work}/logdir/train" "${nj}")
    n_valid=$(split_keys "$(keys_of "${dumpdir}/raw/${valid_set}")" "${work}/logdir/valid" "${n_train}")
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

split_dir=${stats_dir}/splits${num_splits_asr}
split_training_lists() {  # --num_splits_asr K: ESPnet's split of the training lists, made once
    local dir=${dumpdir}/raw/${train_set} speech tmp
    [ ! -f "${split_dir}/.done" ] || return 0
    speech=$(keys_of "${dir}")
    tmp=${split_dir}.tmp.$$
    rm -rf "${tmp}"
    ${python} -m espnet2.bin.split_scps --scps "${speech}" "${dir}/text" \
        "${stats_dir}/train/speech_shape" "${stats_dir}/train/text_shape.bpe" \
        --num_splits "${num_splits_asr}" --output_dir "${tmp}" > "${tmp}.log" 2>&1 \
        || { echo "$0: splitting the training lists failed; see ${tmp}.log" >&2; return 1; }
    if [ -f "${dir}/segments" ]; then  # the kaldi_segments type reads wav.scp beside its segments
        cp "${dir}/wav.scp" "${tmp}/segments/wav.scp"
    fi
    touch "${tmp}/.done"
    # Several nodes may get here at once on a shared disk: the first complete copy wins.
    mv -T "${tmp}" "${split_dir}" 2> /dev/null || rm -rf "${tmp}"
    rm -f "${tmp}.log"
}

train_data_args() {  # ESPnet's training-set arguments: the whole lists or their --num_splits_asr parts
    local dir=${dumpdir}/raw/${train_set} speech type=sound
    if [ "${num_splits_asr}" -le 1 ]; then
        echo "$(data_args train "${dir}") --train_shape_file ${stats_dir}/train/speech_shape" \
            "--train_shape_file ${stats_dir}/train/text_shape.bpe"
        return
    fi
    speech=$(keys_of "${dir}")
    [ ! -f "${dir}/segments" ] || type=kaldi_segments
    # ESPnet's --multiple_iterator reads one part per epoch: memory stays that of one part.
    echo "--train_data_path_and_name_and_type ${split_dir}/$(basename "${speech}"),speech,${type}" \
        "--train_data_path_and_name_and_type ${split_dir}/text,text,text" \
        "--train_shape_file ${split_dir}/speech_shape --train_shape_file ${split_dir}/text_shape.bpe" \
        "--multiple_iterator true"
}

train_log_of() {  # <exp>: the training log; one per node when each node runs torchrun itself
    if [ "${num_nodes}" -gt 1 ] && [ "${dist_launcher}" = torchrun ]; then
        echo "$1/train.$(hostname -s).log"
    else
        echo "$1/train.log"
    fi
}

# A rerun resumes training and appends to its log: the epochs already reported stay in it.
train_model() {  # <model> <threads>: one ESPnet training run, logged to $(train_log_of <exp>)
    local model=$1 threads=$2 exp=${expdir}/asr_$1 launcher=() dist=() nproc
    mkdir -p "${exp}"
    case "${dist_launcher}" in
        auto)  # ESPnet's own launch: one process per GPU spawned by ESPnet on this node
            launcher=(${python} -m espnet_omni.bin.asr_train)
            [ "${ngpu}" -le 1 ] || dist=(--multiprocessing_distributed true) ;;
        torchrun)  # one process per device on each node; ESPnet reads RANK, LOCAL_RANK, WORLD_SIZE
            nproc=${nproc_per_node}
            [ "${nproc}" -gt 0 ] || nproc=$(( ngpu > 0 ? ngpu : 1 ))
            launcher=(${python} -m torch.distributed.run --nnodes "${num_nodes}" --nproc_per_node "${nproc}")
            if [ "${num_nodes}" -gt 1 ]; then
                launcher+=(--rdzv_backend c10d --rdzv_endpoint "${rdzv_endpoint}"
                    --rdzv_id "${rdzv_id:-$(basename "$(cd "${expdir}" && pwd)")}_${model}")
            else
                launcher+=(--standalone)
            fi
            launcher+=(-m espnet_omni.bin.asr_train)
            dist=(--ngpu "$(( ngpu > 0 ? 1 : 0 ))" --multiprocessing_distributed false)
            [ "${ngpu}" -gt 0 ] || dist+=(--dist_backend gloo) ;;  # NCCL needs GPUs
        slurm)  # one task per node (srun); ESPnet spawns --ngpu processes in each
            read -r -a launcher <<< "${train_cmd}"
            launcher+=(--nodes "${num_nodes}" --ntasks-per-node 1 ${python} -m espnet_omni.bin.asr_train)
            dist=(--dist_launcher slurm
                --dist_init_method "file://$(cd "${exp}" && pwd)/.dist_init_${SLURM_JOB_ID:-0}_$(date +%s)")
            [ "${ngpu}" -le 1 ] || dist+=(--multiprocessing_distributed true)
            [ "${ngpu}" -gt 0 ] || dist+=(--dist_backend gloo) ;;
    esac
    # shellcheck disable=SC2046,SC2086
    OMP_NUM_THREADS=${threads} "${launcher[@]}" \
        --config "$(config_of "${model}")" --ngpu "${ngpu}" ${token_args} \
        $(train_data_args) $(data_args valid "${dumpdir}/raw/${valid_set}") \
        --valid_shape_file "${stats_dir}/valid/speech_shape" \
        --valid_shape_file "${stats_dir}/valid/text_shape.bpe" \
        --fold_length 80000 --fold_length 150 \
        --normalize global_mvn --normalize_conf "stats_file=${stats_dir}/train/feats_stats.npz" \
        "${speed_perturb_args[@]}" "${dist[@]}" \
        --resume true --output_dir "${exp}" ${asr_args} >> "$(train_log_of "${exp}")" 2>&1
}

train_lm() {  # one ESPnet LM training run on one thread, logged to <lm_exp>/train.log
    mkdir -p "${lm_exp}"
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 ${python} -m espnet_omni.bin.lm_train --config "${lm_config}" --ngpu "${ngpu}" ${token_args} \
        --train_data_path_and_name_and_type "${dumpdir}/raw/${train_set}/text,text,text" \
        --valid_data_path_and_name_and_type "${dumpdir}/raw/${valid_set}/text,text,text" \
        --train_shape_file "${lm_stats_dir}/train/text_shape.bpe" \
        --valid_shape_file "${lm_stats_dir}/valid/text_shape.bpe" \
        --fold_length 150 --resume true --output_dir "${lm_exp}" ${lm_args} >> "${lm_exp}/train.log" 2>&1
}

check_training_configs() {  # the configs of every training run, by the training commands themselves
    # Each command checks its --config's keys and its arguments (espnet_omni.launch, ESPnet's
    # parser) and stops there (--print_config): a typo in one config fails the stage before any
    # model trains, instead of after the others have trained beside it.
    local model pids=() names=() logs=() i failed=0
    for model in "${model_list[@]}"; do
        mkdir -p "${expdir}/asr_${model}"
        names+=("$(config_of "${model}")"); logs+=("${expdir}/asr_${model}/config_check.log")
        # shellcheck disable=SC2086
        ${python} -m espnet_omni.bin.asr_train --config "$(config_of "${model}")" ${token_args} \
            "${speed_perturb_args[@]}" ${asr_args} --print_config > "${logs[-1]}" 2>&1 &
        pids+=($!)
    done
    if "${use_lm}"; then
        mkdir -p "${lm_exp}"
        names+=("${lm_config}"); logs+=("${lm_exp}/config_check.log")
        # shellcheck disable=SC2086
        ${python} -m espnet_omni.bin.lm_train --config "${lm_config}" ${token_args} ${lm_args} \
            --print_config > "${logs[-1]}" 2>&1 &
        pids+=($!)
    fi
    for i in "${!pids[@]}"; do
        if wait "${pids[$i]}"; then
            rm -f "${logs[$i]}"
        else
            echo "ERROR: training with ${names[$i]} would fail (${logs[$i]}):" >&2
            { grep -v "^Failed to import Flash Attention" "${logs[$i]}" || true; } | tail -n 20 >&2
            failed=1
        fi
    done
    return "${failed}"
}

if ! "${skip_train}" && [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
    log "Stage 6: checking the training configs"
    check_training_configs
    # Up to train_jobs models train at once; on CPUs, several single-threaded runs use the
    # cores better than one multi-threaded run of these small models.
    threads=${train_threads}
    [ "${threads}" -gt 0 ] || threads=$(( $(nproc) / $(min "${train_jobs}" "${#model_list[@]}") ))
    [ "${threads}" -gt 0 ] || threads=1
    if [ "${num_splits_asr}" -gt 1 ]; then
        log "Stage 6: training lists split in ${num_splits_asr} parts -> ${split_dir}"
        split_training_lists
    fi
    runs=()
    for model in "${model_list[@]}"; do
        while [ "$(jobs -rp | wc -l)" -ge "${train_jobs}" ]; do wait -n || true; done
        log "Stage 6: training ${model} -> ${expdir}/asr_${model} (${ngpu} GPUs x ${num_nodes} nodes, launcher ${dist_launcher}, ${threads} threads; log: $(train_log_of "${expdir}/asr_${model}"))"
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
            run_log=$(train_log_of "${run}")
            [ "${run}" != "${lm_exp}" ] || run_log=${run}/train.log
            echo "ERROR: training ${run} failed; the end of ${run_log}:" >&2
            tail -n 30 "${run_log}" >&2
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
    # with "<set>/"), then split per set: every ESPnet process spends ~10 s importing. Sets
    # with a segments file (recordings and prefixed segments) make a second pass of their own.
    # Jobs decode in <dir>.tmp, each marked done when it has exited 0; <dir>.tmp is moved to
    # <dir> when all are. A rerun after a failure or a kill keeps the finished jobs of a
    # <dir>.tmp made with the same signature and job count, and decodes only the others.
    for model in "${model_list[@]}"; do
        exp=${asr_exps}/asr_${model}
        dir=${exp}/${decode_name}
        work=${dir}.tmp
        new=${dir}.tmp.new  # this run's lists, until it is known whether work is kept
        log "Stage 7: decoding ${test_sets} with ${exp}/${inference_model} -> ${dir}"
        rm -rf "${new}"
        mkdir -p "${new}"
        plain_sets=(); segment_sets=()
        for dset in "${test_list[@]}"; do
            if [ -f "${datadir}/${dset}/segments" ]; then segment_sets+=("${dset}"); else plain_sets+=("${dset}"); fi
        done
        passes=()
        if [ "${#plain_sets[@]}" -gt 0 ]; then
            passes+=("${work}")
            for dset in "${plain_sets[@]}"; do
                awk -v s="${dset}" '{ print s "/" $0 }' "${datadir}/${dset}/wav.scp"
            done > "${new}/wav.scp"
        fi
        if [ "${#segment_sets[@]}" -gt 0 ]; then
            passes+=("${work}/segment_sets")
            mkdir -p "${new}/segment_sets"
            for dset in "${segment_sets[@]}"; do
                awk -v s="${dset}" '{ print s "/" $0 }' "${datadir}/${dset}/wav.scp"
            done > "${new}/segment_sets/wav.scp"
            for dset in "${segment_sets[@]}"; do
                awk -v s="${dset}" '{ print s "/" $1, s "/" $2, $3, $4 }' "${datadir}/${dset}/segments"
            done > "${new}/segment_sets/segments"
        fi
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
        gpu_of_job=()
        if [ "${inference_ngpu}" -gt 0 ] && [ "${ngpu}" -gt 1 ] && [ -z "${CUDA_VISIBLE_DEVICES:-}" ]; then
            # Decoding jobs take the node's GPUs in turn (run_jobs puts the job number for JOB);
            # a CUDA_VISIBLE_DEVICES already set is left to the user.
            gpu_of_job=(bash -c "export CUDA_VISIBLE_DEVICES=\$(( (JOB - 1) % ${ngpu} )); exec \"\$@\"" _)
        fi
        # A decode made with the same options from the same model, LM, decoding config and lists
        # is kept, so that a resumed recipe or study does not decode again what it has. Files
        # count by content (a resumed training writes its averaged model anew); the trainings'
        # config.yaml, which a resume rewrites with its own output_dir, by the model it made.
        signature=$( { echo "${inference_args}"
            for arg in "${exp}/${inference_model}" "${decoder[@]}"; do
                case "${arg}" in */config.yaml) continue ;; esac
                if [ -f "${arg}" ]; then cksum < "${arg}"; else echo "${arg}"; fi
            done
            for list in "${new}/wav.scp" "${new}/segment_sets/wav.scp" "${new}/segment_sets/segments"; do
                [ ! -f "${list}" ] || cat "${list}"
            done
            } | cksum)
        kept=true
        for dset in "${test_list[@]}"; do [ -f "${dir}/${dset}/text" ] || kept=false; done
        if "${kept}" && [ "$(cat "${dir}/signature" 2>/dev/null)" = "${signature}" ]; then
            log "Stage 7: ${dir} is decoded from the same model and settings; kept"
            rm -rf "${work}" "${new}"
            continue
        fi
        # The jobs' key lists follow from the lists (in the signature) and the job count.
        job_signature="${signature} ${inference_nj}"
        if [ "$(cat "${work}/job_signature" 2>/dev/null)" = "${job_signature}" ]; then
            rm -rf "${new}"
        else
            rm -rf "${work}"
            mv "${new}" "${work}"
            echo "${job_signature}" > "${work}/job_signature"
        fi
        texts=()
        for pass in "${passes[@]}"; do
            parts=$(split_keys "$(keys_of "${pass}")" "${pass}/logdir" "${inference_nj}")
            finished=()
            for n in $(seq 1 "${parts}"); do
                if [ -e "${pass}/logdir/asr_inference.${n}.done" ]; then
                    finished+=("${n}")
                else
                    rm -rf "${pass}/logdir/output.${n}"  # what a failed or killed job left
                fi
                texts+=("${pass}/logdir/output.${n}/1best_recog/text")
            done
            if [ "${#finished[@]}" -gt 0 ]; then
                log "Stage 7: ${pass}: jobs ${finished[*]} of ${parts} finished before; decoding the others"
            fi
            # shellcheck disable=SC2086
            run_jobs --done "${pass}/logdir/asr_inference.JOB.done" "${parts}" "${pass}/logdir/asr_inference.JOB.log" \
                "${gpu_of_job[@]}" ${python} "${decoder[@]}" --ngpu "${inference_ngpu}" \
                    --data_path_and_name_and_type "$(speech_of "${pass}")" \
                    --key_file "${pass}/logdir/keys.JOB.scp" \
                    --asr_train_config "${exp}/config.yaml" \
                    --asr_model_file "${exp}/${inference_model}" \
                    --output_dir "${pass}/logdir/output.JOB" ${inference_args}
        done
        cat "${texts[@]}" > "${work}/text"
        for dset in "${test_list[@]}"; do
            mkdir -p "${work}/${dset}"
            awk -v p="${dset}/" 'index($0, p) == 1 { print substr($0, length(p) + 1) }' \
                "${work}/text" | sort -k1,1 > "${work}/${dset}/text"
        done
        echo "${signature}" > "${work}/signature"
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

if [ "${stage}" -le 10 ] && [ "${stop_stage}" -ge 10 ]; then
    # Beside RESULTS.md: <expdir>/routing, <expdir>/eval/routing or <expdir>/download/routing.
    routing_dir=$(dirname "${results}")/routing
    routing_sets=("${test_list[@]}")
    routing_args=()
    if ! "${skip_train}"; then
        routing_sets=("${valid_set}" "${test_list[@]}")
        train_dir=${dumpdir}/raw/${train_set}  # what training read (stage 3)
        [ -f "${train_dir}/wav.scp" ] || train_dir=${datadir}/${train_set}
        routing_args+=(--reference_dir "train=${train_dir}" --reference_max_utts "${routing_reference_utts}")
    fi
    # The same utterances with noise, under the same ids: how many frames change expert.
    noise_base=${routing_sets[0]}
    noisy=${datadir}/${noise_base}_pink${routing_noise_snr}
    if [ ! -f "${noisy}/wav.scp" ] || [ "${datadir}/${noise_base}/wav.scp" -nt "${noisy}/wav.scp" ]; then
        ${python} -m espnet_omni.bin.make_noisy_copy --data_dir "${datadir}/${noise_base}" \
            --output_dir "${noisy}" --snr "${routing_noise_snr}" --colour pink
    fi
    routing_args+=(--noise_pair "${datadir}/${noise_base}" "${noisy}")
    for dset in "${routing_sets[@]}"; do routing_args+=(--data_dir "${dset}=${datadir}/${dset}"); done
    for model in "${model_list[@]}"; do routing_args+=(--model "${asr_exps}/asr_${model}"); done
    log "Stage 10: routing analysis of ${model_list[*]} on ${routing_sets[*]} -> ${routing_dir}"
    ${python} -m espnet_omni.bin.analyze_routing "${routing_args[@]}" --model_file "${inference_model}" \
        --max_utts "${routing_max_utts}" --ngpu "${inference_ngpu}" --output_dir "${routing_dir}" \
        --results "${results}"
fi

if ! "${skip_train}" && [ "${stage}" -le 11 ] && [ "${stop_stage}" -ge 11 ]; then
    routing_files=()
    if [ -d "${expdir}/routing" ]; then routing_files=(--option "${expdir}/routing"); fi
    for model in "${model_list[@]}"; do
        exp=${expdir}/asr_${model}
        log "Stage 11: packing ${exp} -> ${exp}/asr_${model}.zip"
        lm_files=()
        if "${use_lm}"; then
            lm_files=(--lm_train_config "${lm_exp}/config.yaml" --lm_file "${lm_exp}/${inference_lm}")
        fi
        ${python} -m espnet2.bin.pack asr --asr_train_config "${exp}/config.yaml" \
            --asr_model_file "${exp}/${inference_model}" "${lm_files[@]}" \
            --option "${token_dir}/bpe.model" --option "${stats_dir}/train/feats_stats.npz" \
            --option "${expdir}/RESULTS.md" --option "${exp}/images" "${routing_files[@]}" \
            --outpath "${exp}/asr_${model}.zip"
    done
fi

if ! "${skip_train}" && [ "${stage}" -le 12 ] && [ "${stop_stage}" -ge 12 ]; then
    if [ -z "${hf_repo_prefix}" ]; then
        log "Stage 12: skipped (give --hf_repo_prefix to upload to Hugging Face)"
    else
        for model in "${model_list[@]}"; do
            log "Stage 12: uploading ${expdir}/asr_${model}/asr_${model}.zip -> ${hf_repo_prefix}${model}"
            ${python} -m espnet_omni.bin.publish --model_zip "${expdir}/asr_${model}/asr_${model}.zip" \
                --repo_id "${hf_repo_prefix}${model}" --results "${expdir}/RESULTS.md"
        done
    fi
fi

log "Finished stages ${stage}-${stop_stage}"
