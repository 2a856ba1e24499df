#!/usr/bin/env bash
# Build the Python environment of espnet-omni in a virtualenv (default: ./.venv).
#
#   bash tools/install.sh                 # CPU: torch 2.13.0 (CPU build) + espnet 202511
#   VENV=/path/to/env bash tools/install.sh
#
# GPU users: create the venv, install a CUDA torch with its matching torchaudio into it first,
# then run this script; an importable torch already in the venv is kept as it is.
#
# Why this is not a plain `pip install espnet`:
#   * espnet 202511 pins setuptools<74 while torch 2.13 needs setuptools>=77.0.3, so pip
#     backtracks to a CUDA torch. We install espnet without dependencies and then its own
#     requirement list with setuptools>=77.0.3,<81 (82 dropped pkg_resources, pyworld imports it).
#   * pip 26.3 refuses espnet (a direct-URL dependency of one of its dependencies): pip<26.3.
#   * NIST sclite (Debian's sctk), which the recipe's scoring prefers and a test compares the
#     Python scorer with, is an apt package: installed here when run as root with apt-get.
#   * the torchaudio wheels link CUDA libraries; on a CPU torch their compiled extension cannot
#     load and `import torchaudio` fails. Removing those files makes torchaudio use its
#     pure-Python paths (all that ESPnet ASR uses). Done only when torch is a CPU build AND the
#     extension fails to load.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
venv=${VENV:-$here/.venv}
torch_version=${TORCH_VERSION:-2.13.0}
torchaudio_version=${TORCHAUDIO_VERSION:-2.11.1}
espnet_version=${ESPNET_VERSION:-202511}
model_zoo_version=${MODEL_ZOO_VERSION:-0.1.7}
setuptools_spec='setuptools>=77.0.3,<81'

log() { printf '[install] %s\n' "$*" >&2; }

"$python" - <<'PY' || { echo "[install] Python 3.11 is required (found another version); set PYTHON=python3.11" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY

[ -x "$venv/bin/python" ] || { log "creating $venv"; "$python" -m venv "$venv"; }
py="$venv/bin/python"
pip() { "$py" -m pip "$@"; }

pip install --quiet "pip<26.3" packaging

if "$py" -c 'import torch' 2>/dev/null; then
  log "keeping torch $("$py" -c 'import torch; print(torch.__version__)')"
else
  log "installing torch==$torch_version"
  pip install --quiet "torch==$torch_version"
fi
installed_torch=$("$py" -c 'import torch; print(torch.__version__)')
constraints=$(mktemp)
trap 'rm -f "$constraints" "$constraints.req"' EXIT
# Nothing below may replace the torch chosen above.
printf 'torch==%s\n%s\n' "$installed_torch" "$setuptools_spec" >"$constraints"

if ! "$py" -c 'import importlib.metadata as m; m.version("torchaudio")' 2>/dev/null; then
  pip install --quiet --no-deps "torchaudio==$torchaudio_version"
fi
pip install --quiet --no-deps "espnet==$espnet_version" "espnet_model_zoo==$model_zoo_version"
pip install --quiet --no-deps -e "$here[test]"

log "installing the requirements of espnet, espnet_model_zoo and espnet-omni"
"$py" "$here/tools/requirements.py" espnet espnet_model_zoo "espnet-omni[test]" \
  --replace "$setuptools_spec" >"$constraints.req"
pip install --quiet -r "$constraints.req" -c "$constraints"

"$py" - <<'PY'
import importlib.util
import pathlib
import torch

try:
    import torchaudio  # noqa: F401
except OSError as err:
    if torch.version.cuda is not None or torch.version.hip is not None:
        raise SystemExit(f"[install] torchaudio does not load beside this GPU torch: {err}")
    lib = pathlib.Path(importlib.util.find_spec("torchaudio").origin).parent / "lib"
    removed = sorted(p.name for p in lib.glob("*.so"))
    for p in lib.glob("*.so"):
        p.unlink()
    print(f"[install] CPU torch: removed torchaudio's CUDA-linked extension files {removed}")
    import torchaudio  # noqa: F401,F811
PY

# The same lookup as the recipe's scoring and its test (Debian installs sclite outside PATH).
if "$py" -c 'import sys; from espnet_omni.recipe.scoring import find_sclite; sys.exit(find_sclite() is None)'; then
  :
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing sclite (Debian's sctk)"
  apt-get install -y -q sctk >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q sctk >/dev/null; }
else
  log "no sclite: the recipe scores with its Python scorer; 'apt-get install sctk' (as root) for sclite and its test"
fi

"$py" -c 'import espnet_omni, espnet2.tasks.asr, torch, torchaudio; print("[install] ok: torch", torch.__version__, "torchaudio", torchaudio.__version__, "espnet_omni", espnet_omni.__version__)'
