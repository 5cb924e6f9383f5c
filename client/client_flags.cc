#include "client/client_flags.h"

#include "absl/flags/flag.h"

// Connection and request (classify, bench, models, info, health).
ABSL_FLAG(std::string, server, "127.0.0.1:8500", "vitserve gRPC address host:port");
ABSL_FLAG(bool, tls, false, "Connect with TLS (implied by --tls_ca / --tls_cert)");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA bundle the server certificate must chain to");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (mutual TLS), with --tls_key");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to verify in the server certificate instead of the --server host");
ABSL_FLAG(std::string, model, "", "Model name; empty = the server's default model");
ABSL_FLAG(double, keep_rate, 0.0,
          "Token keep-rate in (0, 1]; 0 = let the server choose (classify, bench)");
ABSL_FLAG(double, min_keep_rate, 0.0,
          "Lowest keep-rate the server may choose; 0 = the model's minimum (classify, bench)");
ABSL_FLAG(double, min_expected_accuracy, 0.0,
          "Top-1 accuracy (fraction, e.g. 0.85) the server-chosen keep-rate must be expected to "
          "reach from the model's calibration; 0 = no bound (classify, bench)");
ABSL_FLAG(std::string, budget_ms, "0",
          "Latency budget in ms; 0 = none. classify: a number. bench: a distribution, "
          "\"50\", \"uniform:20:100\" or \"choice:30,100,300\"");
ABSL_FLAG(int32_t, top_k, 5, "Number of classes returned per image (classify)");
ABSL_FLAG(bool, json, false, "Machine-readable output: one JSON object per line");
ABSL_FLAG(int32_t, concurrency, 4,
          "Requests in flight at once (classify; bench closed loop when --rate is 0)");
ABSL_FLAG(int64_t, timeout_ms, 30000,
          "gRPC deadline per call in ms; 0 = none (bench then uses 60000 to stay bounded)");
ABSL_FLAG(bool, logits, false, "Ask for and print the raw logits (classify --json)");
ABSL_FLAG(std::string, progress, "auto",
          "Progress bar on stderr: auto (only when stderr is a terminal), true, false");
ABSL_FLAG(int64_t, max_file_bytes, 64 << 20, "Refuse image files larger than this (bytes)");
ABSL_FLAG(bool, labels, false, "info --json: include the full label list");
ABSL_FLAG(std::string, service, "", "health: service name to check; empty = the whole server");

// Load generator (bench).
ABSL_FLAG(double, rate, 0.0,
          "bench: open-loop Poisson arrivals per second; 0 = closed loop with --concurrency");
ABSL_FLAG(double, duration_s, 10.0, "bench: stop sending after this many seconds (max 3600)");
ABSL_FLAG(int64_t, requests, 0, "bench: stop after this many requests; 0 = only --duration_s");
ABSL_FLAG(std::string, input, "", "bench: image file or directory to send (cycled)");
ABSL_FLAG(bool, random_tensor, false,
          "bench: send random N(0,1) tensors of the model's input shape instead of images");
ABSL_FLAG(std::string, json_out, "", "bench: also write the report as JSON to this file");
ABSL_FLAG(uint64_t, seed, 1, "bench: seed for arrivals, budgets and random tensors");
ABSL_FLAG(int32_t, max_inflight, 1024,
          "bench open loop: arrivals beyond this many outstanding requests are dropped and "
          "counted as CLIENT_DROPPED (keeps the client bounded)");
ABSL_FLAG(int32_t, max_inputs, 256, "bench: load at most this many image files");
ABSL_FLAG(double, bad_fraction, 0.0,
          "bench (soak): this fraction of requests is deliberately invalid (keep_rate 2)");
ABSL_FLAG(double, cancel_fraction, 0.0,
          "bench (soak): this fraction is cancelled by the client after a random 0..budget "
          "delay (0..20 ms without a budget)");
