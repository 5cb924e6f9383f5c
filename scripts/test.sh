#!/usr/bin/env bash
# Quick start, step 2: the whole test suite (unit, golden, integration, observability).
# Installs missing packages, builds, then runs CTest. Extra args go to ctest
# (e.g. -R golden).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 -j"${CTEST_JOBS:-1}" "$@"
