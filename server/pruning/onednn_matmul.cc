#include "server/pruning/onednn_matmul.h"

#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/pruning/task_pool.h"

#ifdef VITSERVE_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace vitserve {

#ifdef VITSERVE_HAVE_DNNL

namespace {

using dnnl::memory;

memory::desc Plain(int64_t rows, int64_t cols) {
  return memory::desc({rows, cols}, memory::data_type::f32, memory::format_tag::ab);
}

// The matmul for m rows on weights laid out as `weights`, with the epilogue as post-ops
// (binary add of the residual, then GELU's erf form). Throws dnnl::error when oneDNN has
// no implementation.
dnnl::matmul::primitive_desc MakeDesc(const dnnl::engine& engine, const memory::desc& weights,
                                      int64_t m, int64_t n, int64_t k, bool residual, bool gelu) {
  dnnl::post_ops ops;
  if (residual) ops.append_binary(dnnl::algorithm::binary_add, Plain(m, n));
  if (gelu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per calling thread, below
  return dnnl::matmul::primitive_desc(
      dnnl::matmul::desc(Plain(m, k), weights, Plain(1, n), Plain(m, n)), attr, engine);
}

}  // namespace

struct OneDnnMatmulWeights::State {
  int64_t n = 0;
  int64_t k = 0;
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  memory weights;  // reordered

  struct Made {
    bool ok = false;  // oneDNN had an implementation
    dnnl::matmul primitive;
    memory::desc scratchpad;
  };
  mutable std::mutex mu;  // guards made
  mutable std::map<std::tuple<int64_t, bool, bool>, std::shared_ptr<const Made>> made;

  std::shared_ptr<const Made> Get(int64_t m, bool residual, bool gelu) const {
    const auto key = std::make_tuple(m, residual, gelu);
    std::lock_guard<std::mutex> lock(mu);
    auto it = made.find(key);
    if (it != made.end()) return it->second;
    auto out = std::make_shared<Made>();
    // oneDNN fixes a primitive's thread count when it is made (OpenMP's on this thread)
    // and starts a team of that size on every execution: made single-threaded here.
    ScopedIntraOpThreads one(1);
    try {
      const auto desc = MakeDesc(engine, weights.get_desc(), m, n, k, residual, gelu);
      // "ref:any" (e.g. for layouts the fast kernels do not take) is orders of magnitude
      // slower than the sgemm the caller falls back to.
      if (!absl::StartsWith(desc.impl_info_str(), "ref")) {
        out->primitive = dnnl::matmul(desc);
        out->scratchpad = desc.scratchpad_desc();
        out->ok = true;
      }
    } catch (const dnnl::error&) {
      out->ok = false;  // kept: the caller falls back every time, without asking again
    }
    made.emplace(key, out);
    return out;
  }
};

absl::StatusOr<std::unique_ptr<OneDnnMatmulWeights>> OneDnnMatmulWeights::Create(
    const float* weight, int64_t n, int64_t k) {
  auto state = std::make_unique<State>();
  state->n = n;
  state->k = k;
  ScopedIntraOpThreads one(1);  // the layout chosen as Get's single-threaded primitives see it
  try {
    // The layout oneDNN picks at 197 rows (one DeiT image); other row counts ask for a
    // primitive on exactly this layout (Get), and one that oneDNN serves only with its
    // reference implementation falls back to the sgemm. On the Ice Lake VM brgemm took
    // it at 1, 8, 68, 197 and 1576 rows of DeiT-S's fc1 shape, with each epilogue (a
    // standalone check, 2026-12-07).
    const memory::desc any({k, n}, memory::data_type::f32, memory::format_tag::any);
    const auto desc = MakeDesc(state->engine, any, 197, n, k, false, false);
    state->weights = memory(desc.weights_desc(), state->engine);
    // weight [n, k] row-major is the [k, n] matrix in column-major order ("ba").
    memory source(memory::desc({k, n}, memory::data_type::f32, memory::format_tag::ba),
                  state->engine, const_cast<float*>(weight));
    dnnl::stream stream(state->engine);
    dnnl::reorder(source, state->weights).execute(stream, source, state->weights);
    stream.wait();
  } catch (const dnnl::error& e) {
    return absl::UnimplementedError(
        absl::StrCat("oneDNN matmul for a ", n, "x", k, " weight: ", e.what()));
  }
  return std::unique_ptr<OneDnnMatmulWeights>(new OneDnnMatmulWeights(std::move(state)));
}

bool OneDnnMatmulWeights::Run(const float* x, const float* bias, const float* residual, bool gelu,
                              float* y, int64_t m) const {
  const State& s = *state_;
  const std::shared_ptr<const State::Made> made = s.Get(m, residual != nullptr, gelu);
  if (!made->ok) return false;
  thread_local std::vector<char> scratch;  // per thread: concurrent Runs never share it
  const size_t scratch_bytes = made->scratchpad.get_size();
  if (scratch.size() < scratch_bytes) scratch.resize(scratch_bytes);
  // oneDNN's memory objects take non-const handles; they only read x, bias and residual.
  memory src(Plain(m, s.k), s.engine, const_cast<float*>(x));
  memory b(Plain(1, s.n), s.engine, const_cast<float*>(bias));
  memory dst(Plain(m, s.n), s.engine, y);
  memory pad(made->scratchpad, s.engine, scratch.data());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src},
                                       {DNNL_ARG_WEIGHTS, s.weights},
                                       {DNNL_ARG_BIAS, b},
                                       {DNNL_ARG_DST, dst},
                                       {DNNL_ARG_SCRATCHPAD, pad}};
  if (residual != nullptr) {
    args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1,
                 memory(Plain(m, s.n), s.engine, const_cast<float*>(residual)));
  }
  dnnl::stream stream(s.engine);
  made->primitive.execute(stream, args);
  stream.wait();
  return true;
}

bool OneDnnMatmulWeights::Ready(int64_t m, bool residual, bool gelu) const {
  return state_->Get(m, residual, gelu)->ok;
}

int64_t OneDnnMatmulWeights::n() const { return state_->n; }
int64_t OneDnnMatmulWeights::k() const { return state_->k; }

#else  // !VITSERVE_HAVE_DNNL

struct OneDnnMatmulWeights::State {
  int64_t n = 0;
  int64_t k = 0;
};

absl::StatusOr<std::unique_ptr<OneDnnMatmulWeights>> OneDnnMatmulWeights::Create(const float*,
                                                                                 int64_t n,
                                                                                 int64_t k) {
  return absl::UnimplementedError(
      absl::StrCat("oneDNN matmul for a ", n, "x", k, " weight: oneDNN is not compiled in"));
}

bool OneDnnMatmulWeights::Run(const float*, const float*, const float*, bool, float*,
                              int64_t) const {
  return false;
}

bool OneDnnMatmulWeights::Ready(int64_t, bool, bool) const { return false; }

int64_t OneDnnMatmulWeights::n() const { return state_->n; }
int64_t OneDnnMatmulWeights::k() const { return state_->k; }

#endif  // VITSERVE_HAVE_DNNL

OneDnnMatmulWeights::OneDnnMatmulWeights(std::unique_ptr<State> state) : state_(std::move(state)) {}

OneDnnMatmulWeights::~OneDnnMatmulWeights() = default;

}  // namespace vitserve
