#!/usr/bin/env bash
# Quick start, step 1: install the Debian packages, build, and serve the bundled default
# model from ./models on gRPC port 8500 (metrics on 9090). Ctrl-C stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec ./build/server/vitserve --model_repository=models --port="${PORT:-8500}" \
  --metrics_port="${METRICS_PORT:-9090}" "$@"
