#include "server/rpc/oip_http_server.h"

#include <httplib.h>

#include <atomic>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "server/rpc/oip_json.h"

namespace vitserve {
namespace {

constexpr char kJson[] = "application/json";
// {name} and the optional /versions/{v} of every per-model route.
constexpr char kModelPath[] = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";

int HttpStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

void Reply(httplib::Response& res, const absl::StatusOr<std::string>& body) {
  res.status = HttpStatus(body.status().code());
  res.set_content(body.ok() ? *body : ErrorJson(body.status().message()), kJson);
}

std::string Group(const httplib::Request& req, size_t i) {
  return req.matches.size() > i ? std::string(req.matches[i]) : std::string();
}

// Triton's binary tensor data extension (oip_json.h).
constexpr char kHeaderLength[] = "Inference-Header-Content-Length";

// Runs one inference on the worker thread and waits for the answer.
absl::StatusOr<HttpInferBody> Infer(OipCore& core, const httplib::Request& req) {
  size_t header_length = 0;
  if (req.has_header(kHeaderLength)) {
    const std::string value = req.get_header_value(kHeaderLength);
    uint64_t parsed = 0;
    if (!absl::SimpleAtoi(value, &parsed)) {
      return absl::InvalidArgumentError(
          absl::StrCat(kHeaderLength, " must be a byte count, got '", value, "'"));
    }
    header_length = static_cast<size_t>(parsed);
  }
  absl::StatusOr<inference::ModelInferRequest> request =
      InferRequestFromJson(req.body, Group(req, 1), Group(req, 2), header_length);
  if (!request.ok()) return request.status();
  absl::Notification answered;
  absl::StatusOr<inference::ModelInferResponse> response;
  core.Infer(*request, absl::InfiniteFuture(), std::make_shared<std::atomic<bool>>(false),
             [&](absl::StatusOr<inference::ModelInferResponse> r) {
               response = std::move(r);
               answered.Notify();
             });
  answered.WaitForNotification();
  if (!response.ok()) return response.status();
  return InferResponseToHttp(*request, *response);
}

void AddRoutes(httplib::Server& server, OipCore* core) {
  server.Get("/v2/health/live", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"live":true})", kJson);
  });
  server.Get("/v2/health/ready", [core](const httplib::Request&, httplib::Response& res) {
    res.status = core->ready() ? 200 : 400;
    res.set_content(core->ready() ? R"({"ready":true})" : R"({"ready":false})", kJson);
  });
  server.Get("/v2", [core](const httplib::Request&, httplib::Response& res) {
    res.set_content(ServerMetadataToJson(core->ServerMetadata()), kJson);
  });
  server.Get("/v2/models/stats", [core](const httplib::Request&, httplib::Response& res) {
    absl::StatusOr<inference::ModelStatisticsResponse> stats = core->ModelStatistics("", "");
    Reply(res, stats.ok() ? absl::StatusOr<std::string>(ProtoToJson(*stats)) : stats.status());
  });
  server.Get(kModelPath, [core](const httplib::Request& req, httplib::Response& res) {
    auto meta = core->ModelMetadata(Group(req, 1), Group(req, 2));
    Reply(res, meta.ok() ? absl::StatusOr<std::string>(ModelMetadataToJson(*meta)) : meta.status());
  });
  server.Get(absl::StrCat(kModelPath, "/ready"), [core](const httplib::Request& req,
                                                        httplib::Response& res) {
    absl::StatusOr<bool> ready = core->ModelReady(Group(req, 1), Group(req, 2));
    if (ready.ok() && !*ready) {
      res.status = 400;
      res.set_content(R"({"ready":false})", kJson);
      return;
    }
    Reply(res, ready.ok() ? absl::StatusOr<std::string>(R"({"ready":true})") : ready.status());
  });
  server.Get(absl::StrCat(kModelPath, "/config"),
             [core](const httplib::Request& req, httplib::Response& res) {
               auto config = core->ModelConfig(Group(req, 1), Group(req, 2));
               Reply(res, config.ok() ? absl::StatusOr<std::string>(ProtoToJson(config->config()))
                                      : config.status());
             });
  server.Get(absl::StrCat(kModelPath, "/stats"), [core](const httplib::Request& req,
                                                        httplib::Response& res) {
    auto stats = core->ModelStatistics(Group(req, 1), Group(req, 2));
    Reply(res, stats.ok() ? absl::StatusOr<std::string>(ProtoToJson(*stats)) : stats.status());
  });
  server.Post(absl::StrCat(kModelPath, "/infer"), [core](const httplib::Request& req,
                                                         httplib::Response& res) {
    absl::StatusOr<HttpInferBody> body = Infer(*core, req);
    if (!body.ok() || body->header_length == 0) {
      Reply(res, body.ok() ? absl::StatusOr<std::string>(std::move(body->body)) : body.status());
      return;
    }
    res.set_header(kHeaderLength, std::to_string(body->header_length));
    res.set_content(std::move(body->body), "application/octet-stream");
  });
}

}  // namespace

absl::StatusOr<std::unique_ptr<OipHttpServer>> OipHttpServer::Start(OipCore* core,
                                                                    const OipHttpOptions& options) {
  if (core == nullptr) return absl::InvalidArgumentError("core is required");
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP port must be in [0, 65535], got ", options.port));
  }
  if (options.threads < 1 || options.max_body_bytes == 0) {
    return absl::InvalidArgumentError("HTTP threads and max_body_bytes must be >= 1");
  }
  auto server = std::make_unique<httplib::Server>();
  const size_t threads = static_cast<size_t>(options.threads);
  server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server->set_payload_max_length(options.max_body_bytes);
  server->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 413) {
      res.set_content(ErrorJson("request body too large (see --http_max_body_bytes)"), kJson);
    } else if (res.body.empty()) {
      res.set_content(ErrorJson(absl::StrCat("HTTP ", res.status)), kJson);
    }
  });
  AddRoutes(*server, core);
  int port = options.port;
  if (port == 0) {
    port = server->bind_to_any_port(options.host);
    if (port <= 0) port = 0;
  } else if (!server->bind_to_port(options.host, port)) {
    port = 0;
  }
  if (port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.host, ":", options.port, " (HTTP)"));
  }
  std::unique_ptr<OipHttpServer> out(new OipHttpServer(std::move(server), port));
  return out;
}

OipHttpServer::OipHttpServer(std::unique_ptr<httplib::Server> server, int port)
    : server_(std::move(server)), port_(port) {
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

OipHttpServer::~OipHttpServer() { Stop(); }

void OipHttpServer::Stop() {
  absl::MutexLock lock(&stop_mu_);
  if (!thread_.joinable()) return;
  // stop() only acts on a running server: wait until the listener thread got there.
  while (!server_->is_running()) absl::SleepFor(absl::Milliseconds(1));
  server_->stop();
  thread_.join();
}

}  // namespace vitserve
