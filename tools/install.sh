#!/usr/bin/env bash
# Build the Python environment of espnet-omni in a virtualenv (default: ./.venv).
#
#   bash tools/install.sh                 # Python 3.11: torch 2.13.0 (CPU build) + espnet 202511
#   PYTHON=python3.12 VENV=/path/to/env bash tools/install.sh   # 3.12/3.13: espnet 202611
#
# ESPnet and espnet_model_zoo follow the Python version (ESPNET_VERSION, MODEL_ZOO_VERSION
# override): 3.11 -> 202511 and 0.1.7 (the newest for 3.11); 3.12 and 3.13 -> 202611 and 0.1.11.
# TORCH_VERSION (default 2.13.0) is a CPU build where pip's find-links serve one; PyPI's Linux
# torch is a CUDA build (about 3 GB of wheels).
#
# GPU users: create the venv, install a CUDA torch with its matching torchaudio into it first,
# then run this script; an importable torch already in the venv is kept as it is.
#
# Why this is not a plain `pip install espnet`:
#   * espnet 202511 pins setuptools<74 while torch 2.13 needs setuptools>=77.0.3, so pip
#     backtracks to a CUDA torch. We install espnet without dependencies and then its own
#     requirement list with setuptools>=77.0.3,<81 (82 dropped pkg_resources, pyworld imports it).
#     espnet 202611 requires setuptools>=77.0.3,<82 and no pyworld: its list is taken as it is.
#   * pip 26.3 refuses espnet 202511 (ci_sdr, one of its dependencies, has a direct-URL
#     dependency): pip<26.3 there. espnet 202611 moved ci_sdr to an extra; any pip works.
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

log() { printf '[install] %s\n' "$*" >&2; }

# An existing venv decides the Python version; otherwise $python does.
version_python=$python
[ -x "$venv/bin/python" ] && version_python=$venv/bin/python
python_version=$("$version_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case $python_version in
  3.11) default_espnet=202511 default_model_zoo=0.1.7 ;;
  3.12 | 3.13) default_espnet=202611 default_model_zoo=0.1.11 ;;
  *)
    echo "[install] Python 3.11, 3.12 or 3.13 is required ($version_python is $python_version); set PYTHON" >&2
    exit 1
    ;;
esac
espnet_version=${ESPNET_VERSION:-$default_espnet}
model_zoo_version=${MODEL_ZOO_VERSION:-$default_model_zoo}
if [ "${espnet_version%%.*}" -lt 202611 ]; then
  pip_spec='pip<26.3'
  setuptools_spec='setuptools>=77.0.3,<81'
else
  pip_spec=pip
  setuptools_spec=
fi
log "Python $python_version: espnet $espnet_version, espnet_model_zoo $model_zoo_version"

[ -x "$venv/bin/python" ] || { log "creating $venv"; "$python" -m venv "$venv"; }
py="$venv/bin/python"
pip() { "$py" -m pip "$@"; }

pip install --quiet --upgrade "$pip_spec" packaging

if "$py" -c 'import torch' 2>/dev/null; then
  log "keeping torch $("$py" -c 'import torch; print(torch.__version__)')"
else
  log "installing torch==$torch_version"
  "$py" -c 'import sys; sys.exit(sys.version_info[:2] == (3, 11))' \
    && log "no local CPU build for this Python: pip takes PyPI's (a CUDA build, about 3 GB)"
  pip install --quiet "torch==$torch_version"
fi
# The distribution's version: PyPI's CUDA wheels say 2.13.0 where torch.__version__ says 2.13.0+cu130.
installed_torch=$("$py" -c 'import importlib.metadata as m; print(m.version("torch"))')
constraints=$(mktemp)
trap 'rm -f "$constraints" "$constraints.req"' EXIT
# Nothing below may replace the torch chosen above.
printf 'torch==%s\n%s\n' "$installed_torch" "$setuptools_spec" >"$constraints"
replace=()
[ -z "$setuptools_spec" ] || replace=(--replace "$setuptools_spec")

if ! "$py" -c 'import importlib.metadata as m; m.version("torchaudio")' 2>/dev/null; then
  pip install --quiet --no-deps "torchaudio==$torchaudio_version"
fi
pip install --quiet --no-deps "espnet==$espnet_version" "espnet_model_zoo==$model_zoo_version"
pip install --quiet --no-deps -e "$here[recipe,test]"

log "installing the requirements of espnet, espnet_model_zoo and espnet-omni"
"$py" "$here/tools/requirements.py" espnet espnet_model_zoo "espnet-omni[recipe,test]" \
  "${replace[@]}" >"$constraints.req"
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
