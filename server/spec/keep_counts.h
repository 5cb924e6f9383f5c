// How many tokens each method keeps at one reduction point: the official formulas, as
// pure torch-free functions shared by the cost model (cost_model.cc) and the executed
// forward passes (server/pruning/*_pruner.cc), so both round the same way.
//
// Keep-rates arrive as float (the wire type). The official code computes with the
// Python double the user typed (0.7, not 0.699999988...), and the truncation / ceil in
// these formulas can flip on that difference. DecimalKeepRate() recovers that double by
// rounding to 6 decimals; every function below takes it.
#ifndef VITSERVE_SERVER_SPEC_KEEP_COUNTS_H_
#define VITSERVE_SERVER_SPEC_KEEP_COUNTS_H_

#include <algorithm>
#include <cmath>

namespace vitserve {

// Decimals kept when turning a float keep-rate back into the double the user meant.
inline constexpr double kKeepRateDecimals = 1e6;

inline double DecimalKeepRate(float keep_rate) {
  return std::round(static_cast<double>(keep_rate) * kKeepRateDecimals) / kKeepRateDecimals;
}

// DynamicViT (dyvit.py): stage p (0-based) keeps int(N0 * rho^(p+1)) patch tokens, always
// counted from the initial patch count N0.
inline int DynamicVitKeep(int initial_patches, double rho, int stage) {
  return static_cast<int>(initial_patches * std::pow(rho, stage + 1));
}

// EViT (evit.py): keeps ceil(kr * (N - 1)) of the N - 1 non-CLS tokens (fused included).
inline int EvitKeep(int non_prefix_tokens, double keep_rate) {
  return static_cast<int>(std::ceil(keep_rate * non_prefix_tokens));
}

// TNT (models.py): keeps int(n * rate) of the current n patch tokens.
inline int TntKeep(int patches, double rate) { return static_cast<int>(patches * rate); }

// Tri-Level E-ViT: keeps ceil(n * ratio) of the current n patch tokens.
inline int TriLevelKeep(int patches, double ratio) {
  return static_cast<int>(std::ceil(patches * ratio));
}

// SViTE (vision_transformer_data.py): the selector ranks all n tokens (CLS included) and
// keeps the top int(n * rate), CLS forced on (so int(n * rate) or one more survive).
inline int SviteSelectCount(int tokens, double rate) { return static_cast<int>(tokens * rate); }

// ToMe (merge.py): merges min(r, (t - protected) / 2) tokens of t, where protected
// counts the CLS and distillation tokens.
inline int ToMeMergeCount(int r, int tokens, int protected_tokens) {
  return std::max(0, std::min(r, (tokens - protected_tokens) / 2));
}

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SPEC_KEEP_COUNTS_H_
