#!/bin/sh
# Put the CUDA build of Refrain's pinned torch into a GPU worker's environment.
#
#   deploy/install_cuda_torch.sh [CUDA_TAG]      (default cu128; e.g. cu126, cu128, cu129)
#
# uv.lock pins torch==2.13.0 to the CPU wheel, and the lock is not changed: every other machine,
# `make install`, CI and the default image keep the CPU build. This script runs after `uv sync` (or
# `make install`) on a GPU machine and replaces torch, in that environment only, by the same version
# from PyTorch's CUDA index (its CUDA runtime comes as nvidia-* wheels; the host needs only the
# NVIDIA driver). A later `uv sync` puts the CPU wheel back: run this again after it.
# Environment: UV (the uv binary; default `uv` on PATH, else .tools/bin/uv), VENV (default
# $UV_PROJECT_ENVIRONMENT or .venv), TORCH_INDEX_URL (default PyTorch's index for the tag).
set -eu
cd "$(dirname "$0")/.."
tag="${1:-${TORCH_CUDA:-cu128}}"
case "$tag" in
  cu[0-9]*) ;;
  *) echo "install_cuda_torch: '$tag' is not a CUDA tag such as cu128" >&2; exit 2 ;;
esac
uv="${UV:-$(command -v uv || echo .tools/bin/uv)}"
venv="${VENV:-${UV_PROJECT_ENVIRONMENT:-.venv}}"
# The version pyproject.toml pins ("torch==2.13.0"), so the two never drift apart.
version="$(sed -n 's/^ *"torch==\([^"]*\)",* *$/\1/p' pyproject.toml)"
[ -n "$version" ] || { echo "install_cuda_torch: no torch==X pin in pyproject.toml" >&2; exit 2; }
index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/$tag}"
echo "install_cuda_torch: torch==$version from $index into $venv"
# --no-config: pyproject's find-links (the CPU wheel folder) must not offer its +cpu wheel here; the
# local version tag pins the CUDA build exactly.
"$uv" --no-config pip install --python "$venv/bin/python" --reinstall-package torch \
  --index "$index" "torch==$version+$tag"
"$venv/bin/python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU visible:", torch.cuda.is_available())'
