#!/usr/bin/env bash
# Train the dense twin, Switch and Omni-router CTC models on the generated corpus, decode the
# in-domain and six out-of-domain test sets, and write RESULTS.md.
#   ./run.sh                                   # everything (about 28 min on 2 CPU cores)
#   ./run.sh --smoke true                      # every stage on a tiny corpus (minutes)
#   ./run.sh --stage 6 --stop_stage 9          # resume from training
#   ./run.sh --skip_train true --test_sets "librispeech_test_other tedlium3_test ..." \
#       --download_model "a.zip b.zip"         # packed models on the benchmark sets (db.sh)
set -euo pipefail

train_set=train
valid_set=dev
test_sets="test_clean test_accent test_variant test_rate test_noise test_babble test_reverb"

./asr.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --in_domain_sets "test_clean librispeech_test_clean" \
    --models "dense_transformer switch omni_router" \
    --train_jobs 3 \
    --asr_config_dir conf \
    --use_lm true \
    --inference_tool beam_search \
    --inference_config conf/decode_ctc_lm.yaml \
    "$@"
