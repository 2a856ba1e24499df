#!/usr/bin/env bash
# The paper's comparison trained on LibriSpeech 960 h: the dense twin, Switch and Omni-router
# CTC models at the released Libriheavy shape (12 blocks, d 768, 8 experts; conf/librispeech/),
# from data preparation to exp/librispeech/RESULTS.md with the 11 benchmark columns.
#   ./run_librispeech.sh                          # stages 0-11 on one node of 8 GPUs
#   ./run_librispeech.sh --ngpu 4 --asr_args "--batch_bins 80000000 --accum_grad 2"
#   ./run_librispeech.sh --stage 6 --stop_stage 6 --num_nodes 2 --dist_launcher torchrun \
#       --rdzv_endpoint node1:29400              # the same command on both nodes
# db.sh names the corpora: LIBRISPEECH (training, dev and the two LibriSpeech test columns)
# and one variable per other test corpus; a test corpus that is missing leaves its column
# "not evaluated". Multi-node, Slurm and the options: docs/recipe.md, "Training at scale".
set -euo pipefail

train_set=librispeech_train_960   # train-clean-100 + train-clean-360 + train-other-500
valid_set=librispeech_dev         # dev-clean + dev-other
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
    --asr_config_dir conf/librispeech \
    --expdir exp/librispeech \
    --dumpdir dump/librispeech \
    --token_listdir data/token_list/librispeech \
    --nbpe 5000 \
    --bpe_type unigram \
    --max_wav_duration 35 \
    --speed_perturb_factors "0.9 1.0 1.1" \
    --ngpu 8 \
    --train_jobs 1 \
    --gpu_memory_gb 80 \
    --nj 16 \
    --inference_nj 8 \
    --inference_ngpu 1 \
    --inference_tool greedy_ctc \
    --inference_model valid.cer_ctc.ave.pth \
    --use_lm false \
    "$@"
