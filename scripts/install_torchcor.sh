#!/usr/bin/env bash
# Install TorchCor (https://github.com/sagebei/torchcor) into the project venv for the side-by-side
# in `cardiotwin bench ep`. Optional: the pipeline never needs it.
#
# A plain `pip install torchcor` fails next to cardiotwin's pins (torchcor 1.0.6 asks for
# pandas<3; the venv has pandas 3, which TorchCor's monodomain path works with). So TorchCor goes
# in without its dependency pins, and only the modules its monodomain import chain needs and the
# venv lacks are added: scikit-learn (torchcor.signalanalysis imports sklearn) and nvidia-ml-py
# (`pynvml`, imported when CUDA is available). matplotlib, pandas, scipy, pyvista, wfdb and torch
# come with cardiotwin itself.
#
# Usage: scripts/install_torchcor.sh [path/to/venv]   (default: .venv in the repository root)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/.venv}"
py="$venv/bin/python"
if [[ ! -x "$py" ]]; then
    echo "install_torchcor.sh: no python at $py (create the venv first, see README)" >&2
    exit 1
fi

"$py" -m pip install --no-deps "torchcor==1.0.6"
"$py" -m pip install "scikit-learn>=1.4" "nvidia-ml-py>=12"

# Fails loudly if an import of the monodomain path is still missing.
"$py" - <<'EOF'
import importlib.metadata as md

from torchcor.ionic import TenTusscherPanfilov  # noqa: F401
from torchcor.simulator import Monodomain  # noqa: F401

print(f"torchcor {md.version('torchcor')} imports: Monodomain, TenTusscherPanfilov")
EOF
