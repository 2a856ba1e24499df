# Environment of the recipe: the project's virtualenv (made by tools/install.sh) when no other
# environment is active, and settings every stage expects.
_repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "${_repo_root}/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "${_repo_root}/.venv/bin/activate"
fi
export PYTHONUNBUFFERED=1
export LC_ALL=C
