#!/usr/bin/env bash
# Installs everything vitserve needs on Debian 12 (idempotent: a no-op when present).
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git
  # the product's fixed dependencies
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  # grpc.health.v1 + grpc.reflection.v1alpha protos for the integration tests' stubs
  grpc-proto
  libtorch-dev libopencv-dev prometheus-cpp-dev zlib1g-dev
  # the Open Inference Protocol's REST endpoint (--http_port): HTTP server; JSON for it and
  # for Hugging Face config.json / preprocessor_config.json (server/checkpoint/hf_config.cc)
  libcpp-httplib-dev nlohmann-json3-dev
  # oneDNN sgemm: AVX-512 GEMMs for the linear layers (OpenBLAS picks its Haswell kernel here)
  libdnnl-dev
  # without it Debian's LibTorch falls back to reference BLAS (~11x slower matmul)
  libopenblas0-openmp
  # tests: GoogleTest, golden references and fixtures (python3-torch), real Prometheus,
  # compose validation, the Fashion-MNIST data set the default model is trained on
  googletest libgtest-dev libgmock-dev python3 python3-torch python3-numpy python3-grpcio
  # Pillow: the reference for the PIL-exact resize (tests/unit/preprocess/pil_parity_test.py)
  python3-pil
  python3-yaml prometheus docker-compose dataset-fashion-mnist curl openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
