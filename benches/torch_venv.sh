#!/usr/bin/env bash
# Creates the Python environment that `cargo bench --bench engine` uses for its PyTorch anchor
# (Hugging Face transformers on torch, CPU), from PyPI with pip.
#
#   bash benches/torch_venv.sh [DIR]        # default DIR: tmp/torch-venv in the repository
#   SIMREAL_TORCH_PYTHON=DIR/bin/python cargo bench --bench engine
#
# The bench also finds tmp/torch-venv/bin/python on its own. Versions are pinned so that runs
# on different days compare the same software.
#
# Size: PyPI's Linux torch wheel is the CUDA build, and its libtorch_cuda.so links the CUDA
# libraries (cuBLAS, cuDNN, NCCL, ...) as hard dependencies, so torch cannot be imported
# without the nvidia-* wheels even on a CPU-only machine (checked with `readelf -d` on the
# 2.15.0 wheel). PyPI has no CPU-only torch for Linux, so this installs all of it: 5.6 GB, 3.0 GB
# of it nvidia-* (about two minutes with a fast link).
# Nothing of it is used on the CPU beyond torch's own libtorch_cpu (MKL/oneDNN inside).
set -euo pipefail

TORCH_VERSION=2.15.0
TRANSFORMERS_VERSION=5.24.0

# The default is where the bench looks on its own, wherever this is run from.
dir=${1:-$(dirname "$0")/../tmp/torch-venv}
python=${PYTHON:-python3}

if [[ -x "$dir/bin/python" ]] && "$dir/bin/python" -c "
import torch, transformers, sys
sys.exit(not (torch.__version__.split('+')[0] == '$TORCH_VERSION'
              and transformers.__version__ == '$TRANSFORMERS_VERSION'))" 2>/dev/null; then
    echo "up to date: $dir"
    exit 0
fi

"$python" -m venv "$dir"
"$dir/bin/pip" install --no-cache-dir --quiet --upgrade pip
"$dir/bin/pip" install --no-cache-dir --quiet \
    "torch==$TORCH_VERSION" "transformers==$TRANSFORMERS_VERSION" safetensors
"$dir/bin/python" - <<'EOF'
import torch, transformers
print(f"torch {torch.__version__} (threads {torch.get_num_threads()}, "
      f"CPU capability {torch.backends.cpu.get_cpu_capability()}), "
      f"transformers {transformers.__version__}")
EOF
du -sh "$dir"
