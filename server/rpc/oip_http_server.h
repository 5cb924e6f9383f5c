// The Open Inference Protocol's REST form (KServe v2 HTTP/JSON) on its own port
// (vitserve --http_port), over OipCore; cpp-httplib (Debian's libcpp-httplib-dev) serves
// HTTP/1.1, nlohmann/json parses (oip_json.h).
//
// Endpoints (docs/oip.md):
//   GET  /v2/health/live, /v2/health/ready      200, or 400 when not ready
//   GET  /v2                                    server metadata
//   GET  /v2/models/{name}[/versions/{v}]       model metadata
//   GET  /v2/models/{name}[/versions/{v}]/ready 200 / 400
//   GET  /v2/models/{name}[/versions/{v}]/config   Triton model configuration
//   GET  /v2/models[/{name}[/versions/{v}]]/stats  Triton statistics
//   POST /v2/models/{name}[/versions/{v}]/infer JSON tensors in and out, and Triton's
//                                               binary tensor data extension
// Errors are {"error": "<message>"} with the native message; the status code follows the
// gRPC code (INVALID_ARGUMENT 400, NOT_FOUND 404, RESOURCE_EXHAUSTED 429, UNAVAILABLE
// 503, DEADLINE_EXCEEDED 504, CANCELLED 499, others 500). Bodies over max_body_bytes are
// refused with 413 before they are parsed; bad JSON is 400 with the parser's message.
//
// Threads: a pool of `threads` workers; an infer request holds its worker until the
// answer is ready, so at most `threads` requests are in flight per server.
//
// Thread-safety: Stop() may be called from any thread; idempotent, also run by the
// destructor. `core` is not owned and must outlive the server.
#ifndef VITSERVE_SERVER_RPC_OIP_HTTP_SERVER_H_
#define VITSERVE_SERVER_RPC_OIP_HTTP_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/rpc/oip_core.h"

namespace httplib {
class Server;
}

namespace vitserve {

struct OipHttpOptions {
  std::string host = "0.0.0.0";
  int port = 0;  // 0 = a free port (see port())
  // Largest request body accepted (a JSON FP32 image is ~10 bytes per value).
  size_t max_body_bytes = 64 * 1024 * 1024;
  int threads = 16;
};

class OipHttpServer {
 public:
  // Binds and starts serving. INVALID_ARGUMENT for bad options, UNAVAILABLE when the
  // address cannot be bound.
  static absl::StatusOr<std::unique_ptr<OipHttpServer>> Start(OipCore* core,
                                                              const OipHttpOptions& options);
  ~OipHttpServer();
  OipHttpServer(const OipHttpServer&) = delete;
  OipHttpServer& operator=(const OipHttpServer&) = delete;

  int port() const { return port_; }
  void Stop();

 private:
  OipHttpServer(std::unique_ptr<httplib::Server> server, int port);

  std::unique_ptr<httplib::Server> server_;
  const int port_;
  absl::Mutex stop_mu_;
  std::thread thread_;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_OIP_HTTP_SERVER_H_
