#!/usr/bin/env bash
# The paper's comparison trained on Libriheavy (the released models' corpus): the dense twin,
# Switch and Omni-router CTC models at the released shape (12 blocks, d 768, 8 experts;
# conf/libriheavy/), from data preparation to exp/libriheavy_<subset>/RESULTS.md with the 11
# benchmark columns.
#   ./run_libriheavy.sh                           # --subset large, stages 0-11, one node of 8 GPUs
#   ./run_libriheavy.sh --subset small --asr_args "--max_epoch 20"
#   ./run_libriheavy.sh --stage 6 --stop_stage 6 --num_nodes 4 --dist_launcher torchrun \
#       --rdzv_endpoint node1:29400              # the same command on every node
# db.sh names the corpora: LIBRIHEAVY (the manifests) and LIBRILIGHT (the audio they cut:
# utterances are segments of the long LibriLight recordings, read in place through a segments
# file), LIBRISPEECH for its two test columns, one variable per other test corpus.
set -euo pipefail

subset=large   # small (~500 h), medium (~5.5k h: small + medium) or large (~50k h: all three manifests)
args=()
while [ $# -gt 0 ]; do  # --subset is this script's; everything else goes to asr.sh
    case "$1" in
        --subset) [ $# -ge 2 ] || { echo "$0: --subset needs a value" >&2; exit 1; }; subset=$2; shift 2 ;;
        --subset=*) subset=${1#*=}; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
case "${subset}" in
    small|medium) num_splits_asr=1 ;;
    large) num_splits_asr=10 ;;  # ~11M utterances: one tenth of the lists in memory at a time
    *) echo "$0: --subset must be small, medium or large, got '${subset}'" >&2; exit 1 ;;
esac

train_set=libriheavy_${subset}
valid_set=libriheavy_dev
# The paper's 11 columns, in its order (espnet_omni/corpora/test_sets.py).
test_sets="ami_ihm_eval chime6_eval commonvoice_test fleurs_test callhome_eval2000 swbd_eval2000 \
librispeech_test_clean librispeech_test_other wsj_eval92 tedlium3_test voxpopuli_test"

./asr.sh \
    --stage 0 \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --in_domain_sets "librispeech_test_clean librispeech_test_other" \
    --models "dense_transformer switch omni_router" \
    --asr_config_dir conf/libriheavy \
    --expdir "exp/libriheavy_${subset}" \
    --dumpdir "dump/libriheavy_${subset}" \
    --token_listdir "data/token_list/libriheavy_${subset}" \
    --nbpe 5000 \
    --bpe_type unigram \
    --max_wav_duration 35 \
    --speed_perturb_factors "0.9 1.0 1.1" \
    --num_splits_asr "${num_splits_asr}" \
    --ngpu 8 \
    --train_jobs 1 \
    --gpu_memory_gb 80 \
    --nj 32 \
    --inference_nj 8 \
    --inference_ngpu 1 \
    --inference_tool greedy_ctc \
    --inference_model valid.cer_ctc.ave.pth \
    --use_lm false \
    "${args[@]}"
