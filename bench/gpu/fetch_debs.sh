#!/usr/bin/env bash
# Gathers, on the Debian 12 build machine, the .debs the GPU run (bench/gpu/run.sh) unpacks
# on the GPU machine, which has PyTorch/LibTorch, CMake, ninja and nvcc but no package
# registry: the gRPC / protobuf / Abseil / prometheus-cpp stack, headers, shared libraries,
# protoc and grpc_cpp_plugin (the 27 packages of ../shared/docs/GPU.md, plus the runtime
# libraries their CMake configs and shared objects need that a non-Debian system may lack).
# OpenCV does not travel (its codecs' closure is ~170 MiB): the GPU build is
# -DVITSERVE_WITH_OPENCV=OFF and takes tensor inputs only.
#
# Usage: bench/gpu/fetch_debs.sh [DEST]   (default bench/gpu/debs, ignored by git)
# Prints the total size; the device tool carries at most 64 MiB (tree + carried paths).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$here/debs}
mkdir -p "$dest"

packages=(
  # gRPC
  libgrpc++1.51 libgrpc29 libgrpc++-dev libgrpc-dev protobuf-compiler-grpc
  # protobuf
  libprotobuf32 libprotobuf-dev libprotoc32 libprotoc-dev protobuf-compiler
  # Abseil, RE2, c-ares
  libabsl20220623 libabsl-dev libre2-9 libre2-dev libc-ares2 libc-ares-dev
  # prometheus-cpp and its HTTP server
  prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0
  libprometheus-cpp-push1.0 libcivetweb1 libcivetweb-dev civetweb
  # -dev packages gRPC's and prometheus-cpp's CMake configs look for
  libssl-dev zlib1g-dev libcurl4-openssl-dev libsystemd-dev
  # runtime libraries behind those -dev symlinks (a non-Debian OS may name or lack them)
  libcurl4 libssl3 libsystemd0 zlib1g
  # GoogleTest: the golden parity cases (tests/golden) run as gtest cases
  libgtest-dev libgmock-dev
)

cd "$dest"
rm -f ./*.deb
# apt-get download runs as the _apt user when it can; a root-owned folder is fine for it
# only with the sandbox off.
download() { apt-get -q -o APT::Sandbox::User=root download "${packages[@]}" >/dev/null; }
# A machine whose packages were all installed long ago may have no package lists: refresh
# them once and try again.
download || { apt-get update -qq && download; }
# The commit the run measures: the GPU machine gets the tree without .git.
git -C "$here" rev-parse HEAD > COMMIT 2>/dev/null || echo unknown > COMMIT
git -C "$here" status --porcelain 2>/dev/null | grep -q . && echo "(with uncommitted changes)" >> COMMIT
count=$(ls ./*.deb | wc -l)
bytes=$(du -cb ./*.deb | tail -1 | cut -f1)
printf 'fetch_debs: %d packages, %.1f MiB in %s\n' "$count" "$(echo "$bytes / 1048576" | bc -l)" "$dest"
