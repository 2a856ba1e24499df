#!/usr/bin/env bash
# The main job's comparison over training seeds: the dense twin, Switch and Omni-router trained
# with ESPnet's --seed N (which also sets the order of the batches) on the data, BPE model,
# feature statistics and LM that ./run.sh prepares once. Seed 0 is ./run.sh's own training
# (exp/asr_<model>, ESPnet's default seed); seed N > 0 trains into <study_dir>/seed<N>/. Each
# seed is decoded, scored and analysed there (stages 7-10), also without the LM (greedy CTC) and
# with the best checkpoint beside the averaged one; a finished seed is kept, an interrupted one
# resumes from its last epoch. <study_dir>/REPORT.md and learning_curves.png summarise the seeds
# (espnet_omni.bin.make_study_report).
#   ./run_study.sh                                  # seeds 0 1 2
#   ./run_study.sh --seeds "0 1 2 3 4"
#   ./run_study.sh --ablation conf/ablation/jitter.yaml --seeds "0 1"   # -> study/jitter/
#   ./run_study.sh --ablation conf/ablation/jitter.yaml --ablation_models omni_router  # one model,
#   ./run_study.sh --ablation conf/ablation/jitter.yaml --ablation_models switch  # then the other
#   ./run_study.sh --smoke true --seeds "0 1"       # tiny models on the tiny corpus, under smoke/
# An ablation (conf/ablation/*.yaml: the models it changes and their config options) trains
# those models for every seed, seed 0 included, into study/<name>/ and reports them against the
# baseline study's seeds, whose other models it shares: study/ (the seed folders, or the
# summaries/ that make_study_report keeps of them), or --baseline_dir DIR (e.g.
# ../../../docs/study, the repository's summaries). --asr_args "..." adds options to every
# training (use it with its own --study_dir). Options not listed here go to run.sh for every seed.
set -euo pipefail

seeds="0 1 2"
study_dir=
baseline_dir=
ablation=
ablation_models=
asr_args=
main_exp=exp          # run.sh's --expdir: seed 0 and what the seeds share
models="dense_transformer switch omni_router"
config_dir=conf
smoke=false
python=python3
passthrough=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds=$2; shift 2 ;;
        --study_dir) study_dir=$2; shift 2 ;;
        --baseline_dir) baseline_dir=$2; shift 2 ;;
        --ablation) ablation=$2; shift 2 ;;
        --ablation_models) ablation_models=$2; shift 2 ;;
        --asr_args) asr_args=$2; shift 2 ;;
        --expdir) main_exp=$2; shift 2 ;;
        --models) models=$2; shift 2 ;;
        --asr_config_dir) config_dir=$2; shift 2 ;;
        --smoke) smoke=$2; passthrough+=("$1" "$2"); shift 2 ;;
        --python) python=$2; passthrough+=("$1" "$2"); shift 2 ;;
        --help|-h) sed -n '2,21p' "$0"; exit 0 ;;
        *) passthrough+=("$1"); shift ;;
    esac
done
if [ "${smoke}" = true ] && [ "${main_exp}" = exp ]; then main_exp=smoke/exp; fi  # as asr.sh
if [ "${smoke}" = true ] && [ "${config_dir}" = conf ]; then config_dir=../../../conf/tiny; fi
study_root=$(dirname "${main_exp}")/study
study_root=${study_root#./}
baseline_dir=${baseline_dir:-${study_root}}
for seed in ${seeds}; do
    [[ "${seed}" =~ ^[0-9]+$ ]] || { echo "$0: --seeds must list non-negative integers, got '${seed}'" >&2; exit 1; }
done
log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (run_study.sh) $*"; }
. ./path.sh  # the checkout's .venv unless an environment is active (or --python names one)

train_models=${models}
report_args=()
if [ -n "${ablation}" ]; then
    [ -f "${ablation}" ] || { echo "$0: --ablation ${ablation}: no such file (see conf/ablation/)" >&2; exit 1; }
    study_dir=${study_dir:-${study_root}/$(basename "${ablation}" .yaml)}
    study_dir=${study_dir#./}
    # The generated corpus's training noise, for ablations that add noise (train_noise.yaml).
    if grep -q "data/noise/wav.scp" "${ablation}" && [ ! -f data/noise/wav.scp ]; then
        "${python}" -m espnet_omni.bin.make_noise_set --output_dir data/noise
    fi
    configs=()
    for model in ${models}; do
        if [ -f "${config_dir}/train_asr_${model}.yaml" ]; then configs+=("${config_dir}/train_asr_${model}.yaml")
        else configs+=("${config_dir}/${model}.yaml"); fi
    done
    train_models=$("${python}" -m espnet_omni.bin.make_ablation_configs --ablation "${ablation}" \
        --configs "${configs[@]}" --output_dir "${study_dir}/conf" ${ablation_models:+--only ${ablation_models}})
    config_dir=${study_dir}/conf
    # The models the ablation leaves alone are the baseline's, seed by seed.
    report_args=(--baseline_dir "${baseline_dir}" --models ${models})
fi
study_dir=${study_dir:-${study_root}}
study_dir=${study_dir#./}

# The baseline's seed 0 (run.sh's own models) and everything the seeds share: data, BPE model,
# statistics, the LM (stages 1-6).
log "the baseline's seed 0 and the shared preparation -> ${main_exp}/"
./run.sh --stop_stage 6 "${passthrough[@]}" --expdir "${main_exp}" --models "${models}"

for seed in ${seeds}; do
    dir=${study_dir}/seed${seed}
    mkdir -p "${dir}"
    # The seed's folder shares exp/'s statistics and LM; the baseline's seed 0 models are exp/'s.
    for shared in "${main_exp}"/asr_stats_* "${main_exp}"/lm_stats_* "${main_exp}"/lm_*; do
        if [ -e "${shared}" ]; then ln -sfn "$(cd "${shared}" && pwd)" "${dir}/$(basename "${shared}")"; fi
    done
    if [ "${seed}" -eq 0 ] && [ -z "${ablation}" ] && [ -z "${asr_args}" ]; then
        for model in "${main_exp}"/asr_*; do
            case "${model}" in */asr_stats_*) continue ;; esac
            if [ -d "${model}" ]; then ln -sfn "$(cd "${model}" && pwd)" "${dir}/$(basename "${model}")"; fi
        done
    fi
    log "seed ${seed} -> ${dir}"
    ./run.sh --stage 6 --stop_stage 8 "${passthrough[@]}" --expdir "${dir}" --models "${train_models}" \
        --asr_config_dir "${config_dir}" --asr_args "--seed ${seed} ${asr_args}"
    # The options given to run_study.sh come first so that these calls' stages win over its --stage.
    for decoding in "--use_lm false --inference_tool greedy_ctc" \
            "--use_lm false --inference_tool greedy_ctc --inference_model valid.cer_ctc.best.pth" \
            "--inference_model valid.cer_ctc.best.pth"; do
        # shellcheck disable=SC2086
        ./run.sh "${passthrough[@]}" --stage 7 --stop_stage 8 --expdir "${dir}" --models "${train_models}" \
            --asr_config_dir "${config_dir}" ${decoding}
    done
    # RESULTS.md and routing/ cover every model of the seed's folder: an ablation's models may be
    # trained there by separate runs (--ablation_models), and each run writes both files anew.
    seed_models=()
    for model in ${models}; do
        if [ -d "${dir}/asr_${model}" ]; then seed_models+=("${model}"); fi
    done
    ./run.sh "${passthrough[@]}" --stage 9 --stop_stage 10 --expdir "${dir}" --models "${seed_models[*]}" \
        --asr_config_dir "${config_dir}"
done
log "finished seeds ${seeds} in ${study_dir}"
# shellcheck disable=SC2086
"${python}" -m espnet_omni.bin.make_study_report --study_dir "${study_dir}" --seeds ${seeds} \
    "${report_args[@]}" > /dev/null
log "${study_dir}/REPORT.md"
