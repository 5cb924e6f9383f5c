// vitserve: serves the models of a model repository over gRPC. Wiring only: flags ->
// options, load models, start metrics, service and server, wait for SIGTERM/SIGINT, drain.
//
// Startup prints exactly one line `vitserve listening on <host>:<port>` on stdout (and
// `vitserve metrics on <host>:<port>` when metrics are on, `vitserve http on <host>:<port>`
// with --http_port, the Open Inference Protocol's REST form) once the models are loaded,
// warmed up and health is SERVING. Errors go to stderr with a non-zero exit status.
// With --scheduler=budget (the default) each model's latency sweep runs while the service
// is created, before the port opens (bounded by --sweep_time_cap_s per model); its summary
// goes to stderr.
//
// Security: --tls_cert/--tls_key make the gRPC port TLS-only (plaintext clients fail the
// handshake); --tls_client_ca adds mutual TLS. --metrics_host binds /metrics elsewhere
// (e.g. loopback) than the gRPC --host. docs/production.md.
//
// On SIGHUP: hot reload of every model directory (InferenceServiceImpl::ReloadModel): a
// new version is loaded beside the old one, warmed up and switched in atomically; a
// broken one is refused with a log line and the old version keeps serving.
//
// On SIGTERM/SIGINT: health NOT_SERVING, new requests refused (UNAVAILABLE), in-flight
// requests finish (up to --drain_timeout_s), then exit 0.
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/checkpoint/model_repository.h"
#include "server/metrics/server_metrics.h"
#include "server/rpc/grpc_server.h"
#include "server/rpc/inference_service.h"
#include "server/rpc/metrics_http_server.h"
#include "server/rpc/model_loader.h"
#include "server/rpc/oip_core.h"
#include "server/rpc/oip_grpc_service.h"
#include "server/rpc/oip_http_server.h"
#include "server/rpc/tls/tls_credentials.h"
#include "server/util/cli_usage.h"
#include "server/util/clock.h"
#include "server/util/malloc_tuning.h"

ABSL_FLAG(std::string, model_repository, "",
          "Directory with one sub-directory per model (config.pbtxt, weights, labels). "
          "Required.");
ABSL_FLAG(std::string, default_model, "", "Model for requests that name none (default: first).");
ABSL_FLAG(std::string, host, "0.0.0.0", "Interface to listen on (127.0.0.1 = loopback only).");
ABSL_FLAG(int, port, 0, "gRPC port; 0 picks a free port (printed on stdout).");
ABSL_FLAG(std::string, metrics_host, "",
          "Interface for the /metrics endpoint; empty = the same as --host (e.g. 127.0.0.1 "
          "keeps metrics off the public interface).");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM server certificate chain; with --tls_key the gRPC port speaks TLS only.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; set -> mutual TLS: clients must present a certificate it signed.");
ABSL_FLAG(int, metrics_port, 0,
          "Prometheus /metrics port on --host; 0 picks a free port (printed), -1 disables.");
ABSL_FLAG(int, http_port, -1,
          "Open Inference Protocol (KServe v2) REST port on --host; 0 picks a free port "
          "(printed), -1 disables (docs/oip.md). Its gRPC form is always on --port.");
ABSL_FLAG(int64_t, http_max_body_bytes, 64 << 20,
          "Largest accepted REST request body (bytes); larger ones get 413.");
ABSL_FLAG(int, http_threads, 16, "REST worker threads (each holds one request until answered).");
ABSL_FLAG(std::string, device, "cpu", "cpu | cuda | cuda:N");
ABSL_FLAG(std::string, dtype, "",
          "float32 | bfloat16 | float16 (cuda only); empty = float32 on cpu, bfloat16 on cuda");
ABSL_FLAG(bool, cuda_graphs, true,
          "cuda: capture a CUDA graph per (keep-rate, batch size) and replay it");
// Default 1: the fastest setting measured on the 2-core Debian machine (DeiT-S dense 18.0
// img/s at batch 1 vs 15.2 with 2 threads, which switch the GEMMs from oneDNN to ATen);
// bench/results/threads-cpu.md.
ABSL_FLAG(int, threads, 1,
          "Threads one forward splits across (default 1: fastest measured here, see "
          "bench/results/threads-cpu.md); a batch of 2+ images runs one image shard "
          "per thread, a single image splits each operation; 0 = hardware concurrency.");
ABSL_FLAG(int, max_batch_size, 8, "Largest batch run at once.");
ABSL_FLAG(int, max_queue_delay_ms, 5,
          "How long the first request of a batch waits for more (milliseconds).");
ABSL_FLAG(int, max_queue_size, 256,
          "Requests waiting in all queues; more are refused with RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, num_batch_threads, 1, "Batches run concurrently.");
ABSL_FLAG(int, decode_threads, 2,
          "Threads that decode and preprocess images, off the gRPC/REST threads.");
ABSL_FLAG(int, max_decode_queue_size, 256,
          "Requests waiting for a decode thread; more get RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_stream_in_flight, 32,
          "Unanswered requests per ClassifyStream before the server stops reading it.");
ABSL_FLAG(int64_t, max_image_pixels, 50'000'000,
          "Largest accepted image (width x height), checked before decoding.");
ABSL_FLAG(int, max_message_bytes, vitserve::kDefaultMaxReceiveMessageBytes,
          "Largest accepted gRPC request message (bytes).");
ABSL_FLAG(std::string, scheduler, "budget",
          "budget = latency-budget scheduler (keep-rate chosen per batch from the requests' "
          "budgets; a latency sweep per model at start-up) | fixed = size-or-delay batching "
          "at the requested or default keep-rate.");
ABSL_FLAG(double, shadow_fraction, 0.05,
          "Accuracy proxy: fraction of pruned requests also run dense when the server is idle "
          "(0 = off).");
ABSL_FLAG(double, sweep_time_cap_s, 20,
          "--scheduler=budget: cap on each model's start-up latency sweep (seconds); points "
          "not measured by then are extrapolated.");
ABSL_FLAG(int, sweep_repeats, 3,
          "--scheduler=budget: timed runs per sweep point (the median is kept).");
ABSL_FLAG(double, budget_safety_fraction, 0.1,
          "--scheduler=budget: predicted batch times are inflated by this fraction before "
          "deadline checks (>= 0).");
ABSL_FLAG(double, budget_safety_margin_ms, 1.0,
          "--scheduler=budget: ... and by this many milliseconds per batch (dispatch, work "
          "outside the measured compute; >= 0).");
ABSL_FLAG(double, budget_target_utilization, 0.8,
          "--scheduler=budget: the load cap. The policy serves no keep-rate at which the "
          "recent arrival rate would take more than this fraction of the device's time "
          "(full batches, predicted); in [0, 1], 0 = off.");
ABSL_FLAG(double, budget_miss_target, 0.005,
          "--scheduler=budget: target ratio of admitted budgeted requests that miss their "
          "budget; predictions are inflated while misses or batch times exceed it "
          "(docs/scheduler.md, \"Interference\"). In [0, 1); 0 = no such correction.");
ABSL_FLAG(int, drain_timeout_s, 30,
          "On SIGTERM, how long in-flight requests may take before they are cancelled.");

namespace vitserve {
namespace {

int Fail(const std::string& what, const absl::Status& status) {
  std::cerr << "vitserve: " << what << ": " << status << std::endl;
  return 1;
}

// `status` with `what` in front, as Fail prints it.
absl::Status Annotate(const std::string& what, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(what, ": ", status.ToString()));
}

// The flags' ranges; the message is printed after "vitserve: " (exit code 2).
absl::Status CheckFlags() {
  if (absl::GetFlag(FLAGS_model_repository).empty()) {
    return absl::InvalidArgumentError("--model_repository=DIR is required");
  }
  const std::string scheduler = absl::GetFlag(FLAGS_scheduler);
  if (scheduler != "budget" && scheduler != "fixed") {
    return absl::InvalidArgumentError(
        absl::StrCat("--scheduler must be budget or fixed, got '", scheduler, "'"));
  }
  if (absl::GetFlag(FLAGS_decode_threads) < 1 || absl::GetFlag(FLAGS_max_decode_queue_size) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--decode_threads and --max_decode_queue_size must be >= 1, got ",
        absl::GetFlag(FLAGS_decode_threads), " and ", absl::GetFlag(FLAGS_max_decode_queue_size)));
  }
  const double shadow_fraction = absl::GetFlag(FLAGS_shadow_fraction);
  if (!(shadow_fraction >= 0.0 && shadow_fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shadow_fraction must be in [0, 1], got ", shadow_fraction));
  }
  const double safety_fraction = absl::GetFlag(FLAGS_budget_safety_fraction);
  const double safety_margin_ms = absl::GetFlag(FLAGS_budget_safety_margin_ms);
  if (!(safety_fraction >= 0.0) || !(safety_margin_ms >= 0.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--budget_safety_fraction and --budget_safety_margin_ms must be >= 0, got ",
                     safety_fraction, " and ", safety_margin_ms));
  }
  const double target_utilization = absl::GetFlag(FLAGS_budget_target_utilization);
  if (!(target_utilization >= 0.0 && target_utilization <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--budget_target_utilization must be in [0, 1], got ", target_utilization));
  }
  const double miss_target = absl::GetFlag(FLAGS_budget_miss_target);
  if (!(miss_target >= 0.0 && miss_target < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--budget_miss_target must be in [0, 1), got ", miss_target));
  }
  return absl::OkStatus();
}

ModelLoadOptions LoadOptionsFromFlags() {
  ModelLoadOptions load_options;
  load_options.device = absl::GetFlag(FLAGS_device);
  load_options.dtype = absl::GetFlag(FLAGS_dtype);
  load_options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  // Set explicitly, never left to LibTorch.
  load_options.intra_op_threads =
      absl::GetFlag(FLAGS_threads) > 0
          ? absl::GetFlag(FLAGS_threads)
          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return load_options;
}

ServingOptions ServingOptionsFromFlags() {
  ServingOptions options;
  options.default_model = absl::GetFlag(FLAGS_default_model);
  options.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  options.max_queue_delay = absl::Milliseconds(absl::GetFlag(FLAGS_max_queue_delay_ms));
  options.max_queue_size = absl::GetFlag(FLAGS_max_queue_size);
  options.num_batch_threads = absl::GetFlag(FLAGS_num_batch_threads);
  options.max_stream_in_flight = absl::GetFlag(FLAGS_max_stream_in_flight);
  options.decode_threads = absl::GetFlag(FLAGS_decode_threads);
  options.max_decode_queue_size = absl::GetFlag(FLAGS_max_decode_queue_size);
  options.scheduler =
      absl::GetFlag(FLAGS_scheduler) == "budget" ? SchedulerKind::kBudget : SchedulerKind::kFixed;
  options.sweep_repeats = absl::GetFlag(FLAGS_sweep_repeats);
  options.sweep_time_cap = absl::Seconds(absl::GetFlag(FLAGS_sweep_time_cap_s));
  options.shadow_fraction = absl::GetFlag(FLAGS_shadow_fraction);
  options.safety_fraction = absl::GetFlag(FLAGS_budget_safety_fraction);
  options.safety_margin =
      absl::Microseconds(std::llround(1e3 * absl::GetFlag(FLAGS_budget_safety_margin_ms)));
  options.target_utilization = absl::GetFlag(FLAGS_budget_target_utilization);
  options.guard_miss_target = absl::GetFlag(FLAGS_budget_miss_target);
  options.log = [](const std::string& line) { std::cerr << "vitserve: " << line << std::endl; };
  return options;
}

// host:port, with an IPv6 host in brackets.
std::string HostPort(const std::string& host, int port) {
  return host.find(':') != std::string::npos ? absl::StrCat("[", host, "]:", port)
                                             : absl::StrCat(host, ":", port);
}

// The REST front end on --http_port (null when it is < 0).
absl::StatusOr<std::unique_ptr<OipHttpServer>> StartHttp(OipCore* oip, const std::string& host) {
  if (absl::GetFlag(FLAGS_http_port) < 0) return nullptr;
  OipHttpOptions http_options;
  http_options.host = host;
  http_options.port = absl::GetFlag(FLAGS_http_port);
  http_options.max_body_bytes =
      static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_http_max_body_bytes)));
  http_options.threads = absl::GetFlag(FLAGS_http_threads);
  return OipHttpServer::Start(oip, http_options);
}

// Hot reload: every model directory is loaded again beside the served version and swapped
// in when it loads and warms up; a broken one is refused and the old version keeps
// serving. Traffic flows on the batch threads meanwhile.
void ReloadRepository(const std::string& repository, const ModelLoadOptions& load_options,
                      const PreprocessorOptions& preprocess_options, ServingCore& core) {
  absl::StatusOr<std::vector<std::string>> names = ListModels(repository);
  if (!names.ok()) {
    std::cerr << "vitserve: reload: " << names.status() << std::endl;
    return;
  }
  for (const std::string& name : *names) {
    absl::StatusOr<ServedModel> next =
        LoadServedModel(repository, name, load_options, preprocess_options);
    const std::string version = next.ok() ? next->model->spec().version : "";
    absl::Status s = next.ok() ? core.ReloadModel(*std::move(next)) : next.status();
    if (s.ok()) {
      std::cerr << "vitserve: reload: model '" << name << "' now serves version " << version
                << std::endl;
    } else {
      std::cerr << "vitserve: reload refused, the served version stays: " << s << std::endl;
    }
  }
}

// Everything that serves, in start order (stopped in reverse by Drain).
struct Servers {
  std::unique_ptr<MetricsHttpServer> metrics;  // null without --metrics_port
  std::unique_ptr<InferenceServiceImpl> service;
  std::unique_ptr<OipCore> oip;
  std::unique_ptr<OipGrpcService> oip_grpc;
  std::unique_ptr<GrpcServer> grpc;
  std::unique_ptr<OipHttpServer> http;  // null without --http_port
};

// The gRPC server (native and OIP services) on --host:--port, warm-up, the REST front end;
// then reports SERVING and prints the endpoints.
absl::Status StartServing(Servers& servers, const Clock* clock,
                          std::shared_ptr<grpc::ServerCredentials> credentials,
                          const std::string& host, const std::string& metrics_host) {
  // The Open Inference Protocol over the same core: gRPC on --port, REST on --http_port.
  OipCoreOptions oip_options;
  oip_options.server_version = VITSERVE_VERSION;
  servers.oip = std::make_unique<OipCore>(&servers.service->core(), clock, oip_options);
  servers.oip_grpc = std::make_unique<OipGrpcService>(servers.oip.get());
  GrpcServerOptions server_options;
  server_options.host = host;
  server_options.port = absl::GetFlag(FLAGS_port);
  server_options.max_receive_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  server_options.credentials = std::move(credentials);
  server_options.extra_services.push_back(servers.oip_grpc.get());
  absl::StatusOr<std::unique_ptr<GrpcServer>> grpc =
      GrpcServer::Start(servers.service.get(), server_options);
  if (!grpc.ok()) return Annotate("cannot start the gRPC server", grpc.status());
  servers.grpc = *std::move(grpc);
  if (absl::Status warm = servers.service->WarmUp(); !warm.ok()) {
    return Annotate("warm-up failed", warm);
  }
  absl::StatusOr<std::unique_ptr<OipHttpServer>> http = StartHttp(servers.oip.get(), host);
  if (!http.ok()) return Annotate("cannot start the REST endpoint", http.status());
  servers.http = *std::move(http);
  servers.grpc->SetServing(true);
  servers.oip->SetReady(true);
  std::cout << "vitserve listening on " << servers.grpc->address() << "\n";
  if (servers.http != nullptr) {
    std::cout << "vitserve http on " << HostPort(host, servers.http->port()) << "\n";
  }
  if (servers.metrics != nullptr) {
    std::cout << "vitserve metrics on " << HostPort(metrics_host, servers.metrics->port()) << "\n";
  }
  std::cout << std::flush;
  return absl::OkStatus();
}

void Drain(Servers& servers, int signal_number) {
  std::cerr << "vitserve: " << (signal_number == SIGTERM ? "SIGTERM" : "SIGINT") << ", draining"
            << std::endl;
  servers.grpc->SetServing(false);
  servers.oip->SetReady(false);
  servers.service->StartDraining();
  servers.grpc->Shutdown(absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_s)));
  if (servers.http != nullptr) servers.http->Stop();
  servers.service->Shutdown();
  if (servers.metrics != nullptr) servers.metrics->Stop();
  std::cerr << "vitserve: stopped" << std::endl;
}

int Run() {
  if (absl::Status flags = CheckFlags(); !flags.ok()) {
    std::cerr << "vitserve: " << flags.message() << std::endl;
    return 2;
  }
  const std::string repository = absl::GetFlag(FLAGS_model_repository);
  // SIGTERM/SIGINT are taken synchronously by sigwait() below; blocked here, before any
  // thread starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string host = absl::GetFlag(FLAGS_host);
  const std::string metrics_host =
      absl::GetFlag(FLAGS_metrics_host).empty() ? host : absl::GetFlag(FLAGS_metrics_host);
  // Read the certificates before anything starts: a bad file is a startup error.
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials({absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                             absl::GetFlag(FLAGS_tls_client_ca)});
  if (!credentials.ok()) return Fail("bad TLS configuration", credentials.status());
  // Metrics are served by MetricsHttpServer, not by prometheus-cpp's civetweb exposer,
  // which cannot start threads in a process with LibTorch (see metrics_http_server.h).
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics = ServerMetrics::Create({});
  if (!metrics.ok()) return Fail("cannot create metrics", metrics.status());
  RealClock clock;  // outlives the servers
  Servers servers;
  if (const int metrics_port = absl::GetFlag(FLAGS_metrics_port); metrics_port >= 0) {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> started =
        MetricsHttpServer::Start(metrics_host, metrics_port, metrics->get());
    if (!started.ok()) return Fail("cannot start the metrics endpoint", started.status());
    servers.metrics = std::move(*started);
  }
  const ModelLoadOptions load_options = LoadOptionsFromFlags();
  PreprocessorOptions preprocess_options;
  preprocess_options.max_image_pixels = absl::GetFlag(FLAGS_max_image_pixels);
  absl::StatusOr<std::vector<ServedModel>> models =
      LoadModelRepository(repository, load_options, preprocess_options);
  if (!models.ok()) return Fail("cannot load the model repository", models.status());

  absl::StatusOr<std::unique_ptr<InferenceServiceImpl>> service = InferenceServiceImpl::Create(
      std::move(*models), ServingOptionsFromFlags(), &clock, metrics->get());
  if (!service.ok()) return Fail("cannot create the service", service.status());
  servers.service = std::move(*service);
  if (absl::Status s = StartServing(servers, &clock, *credentials, host, metrics_host); !s.ok()) {
    std::cerr << "vitserve: " << s.message() << std::endl;
    return 1;
  }
  int signal_number = 0;
  while (true) {
    sigwait(&signals, &signal_number);
    if (signal_number != SIGHUP) break;
    ReloadRepository(repository, load_options, preprocess_options, servers.service->core());
  }
  Drain(servers, signal_number);
  return 0;
}

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) {
  vitserve::TuneMallocForInference();  // before any thread; see malloc_tuning.h
  vitserve::SetCommandLineUsage(
      "server/main.cc",
      "vitserve --model_repository=DIR [--port=N] [--metrics_port=N] [flags]\n"
      "gRPC server for token-pruned Vision Transformers (see README.md). Ports default to 0:\n"
      "a free port, printed on the 'listening on' line; the quick start uses 8500 and 9090.");
  absl::ParseCommandLine(argc, argv);
  return vitserve::Run();
}
