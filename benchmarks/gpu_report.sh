#!/usr/bin/env bash
# espnet-omni on a CUDA GPU, in one report file: the CUDA tests (the sync-debug training step
# among them), the MoE layer at the released shape against the dense FFN and its floor,
# training steps of the three encoders at the Libriheavy shape, the host-synchronisation
# counts and a kernel profile of the layer. About 4 minutes on one H200.
#
#   bash benchmarks/gpu_report.sh [output_dir]        # default benchmarks/results
#
# Needs torch with CUDA, espnet and espnet-omni importable (PYTHON=... picks the interpreter).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out_dir=${1:-benchmarks/results}
python=${PYTHON:-python3}
mkdir -p "$out_dir"
report="$out_dir/gpu-$(date +%Y%m%d-%H%M%S).md"
export PYTHONUNBUFFERED=1

{
  echo "# espnet-omni on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
  echo
  "$python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda,
    "compute capability", torch.cuda.get_device_capability())'
  echo
  echo "## CUDA tests"
  echo
  echo '```'
  start=$SECONDS
  timeout 150 "$python" -m pytest -q -p no:cacheprovider --noconftest -rs tests/test_moe_cuda.py 2>&1 | tail -n 60
  # bf16 and fp16 (gradient scaler) autocast training on adversarial batches
  timeout 120 "$python" -m pytest -q -p no:cacheprovider --noconftest -rs -k cuda \
    tests/test_model_numerics.py::test_autocast_training_stays_finite_on_adversarial_batches 2>&1 | tail -n 30
  echo '```'
  echo "($((SECONDS - start)) s)"
  echo
  echo "## Benchmark"
  echo
  start=$SECONDS
  timeout 330 "$python" benchmarks/run.py --device cuda --sections gpu --output_dir "$out_dir" 2>&1
  echo "($((SECONDS - start)) s)"
} 2>&1 | tee "$report"
echo "wrote $report"
