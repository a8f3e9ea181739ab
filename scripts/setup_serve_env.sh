#!/usr/bin/env bash
# Build the serving environment .venv-serve: the Triton server bundled with nvidia-pytriton (Python
# backend only), numpy < 2, onnxruntime and tokenizers; see docs/serving.md. About a minute, ~0.5 GB.
# Usage: bash scripts/setup_serve_env.sh [VENV] [--rebuild]
# PYTHON: an interpreter with plmops installed (default .venv/bin/python); the new environment is based
# on its base interpreter, which must have a shared libpython.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m plmops.infra.serving.environment "$@"
