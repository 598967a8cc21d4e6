#!/usr/bin/env bash
# The GPU check (see gpu_check.py): under 5 minutes on one GPU; `--cpu` runs the same code
# at tiny sizes on CPU. Uses .venv when present, else the python3 on PATH.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$here/../.venv/bin/python"
[ -x "$py" ] || py=python3
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$py" "$here/gpu_check.py" "$@"
