// Command-line flags shared by vitclient's commands (defined in client_flags.cc). Each
// command reads only the flags its help text lists; see docs/client.md.
#ifndef VITSERVE_CLIENT_CLIENT_FLAGS_H_
#define VITSERVE_CLIENT_CLIENT_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, server);
ABSL_DECLARE_FLAG(bool, tls);
ABSL_DECLARE_FLAG(std::string, tls_ca);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, tls_server_name);
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(double, keep_rate);
ABSL_DECLARE_FLAG(double, min_keep_rate);
ABSL_DECLARE_FLAG(double, min_expected_accuracy);
ABSL_DECLARE_FLAG(std::string, budget_ms);
ABSL_DECLARE_FLAG(int32_t, top_k);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(int32_t, concurrency);
ABSL_DECLARE_FLAG(int64_t, timeout_ms);
ABSL_DECLARE_FLAG(bool, logits);
ABSL_DECLARE_FLAG(std::string, progress);
ABSL_DECLARE_FLAG(int64_t, max_file_bytes);
ABSL_DECLARE_FLAG(bool, labels);
ABSL_DECLARE_FLAG(std::string, service);
ABSL_DECLARE_FLAG(double, rate);
ABSL_DECLARE_FLAG(double, duration_s);
ABSL_DECLARE_FLAG(int64_t, requests);
ABSL_DECLARE_FLAG(std::string, input);
ABSL_DECLARE_FLAG(bool, random_tensor);
ABSL_DECLARE_FLAG(std::string, json_out);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(int32_t, max_inflight);
ABSL_DECLARE_FLAG(int32_t, max_inputs);
ABSL_DECLARE_FLAG(double, bad_fraction);
ABSL_DECLARE_FLAG(double, cancel_fraction);

#endif  // VITSERVE_CLIENT_CLIENT_FLAGS_H_
