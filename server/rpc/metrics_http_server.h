// A minimal HTTP/1.x endpoint for Prometheus: GET /metrics answers
// ServerMetrics::Serialize() (text exposition format 0.0.4); any other path is 404, any
// other method 405. One thread serves one connection at a time (scrapes are rare and
// small); a client that sends nothing for kMetricsReadTimeout is dropped.
//
// Why not prometheus::Exposer (civetweb): civetweb starts its threads with a ~100 KiB
// stack, and glibc's pthread_create refuses (EINVAL) a stack smaller than the process's
// static TLS, which LibTorch makes larger than that. In the vitserve process the Exposer
// therefore cannot start ("null context when constructing CivetServer"); this server
// uses default-sized threads.
//
// Thread-safety: Stop() may be called from any thread; it is idempotent and also run by
// the destructor. `metrics` is not owned and must outlive the server.
#ifndef VITSERVE_SERVER_RPC_METRICS_HTTP_SERVER_H_
#define VITSERVE_SERVER_RPC_METRICS_HTTP_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/metrics/server_metrics.h"

namespace vitserve {

// How long a connected client may take to send its request.
inline constexpr absl::Duration kMetricsReadTimeout = absl::Seconds(5);

class MetricsHttpServer {
 public:
  // Binds host:port (IPv4 or IPv6 literal; port 0 = a free port) and starts serving.
  // INVALID_ARGUMENT for a bad host or port, UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& host, int port,
                                                                  const ServerMetrics* metrics);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // The bound port.
  int port() const { return port_; }

  void Stop();

 private:
  MetricsHttpServer(int listen_fd, int wake_read_fd, int wake_write_fd, int port,
                    const ServerMetrics* metrics);
  void Serve();
  void HandleConnection(int fd);

  const int listen_fd_;
  const int wake_read_fd_;
  const int wake_write_fd_;
  const int port_;
  const ServerMetrics* const metrics_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_METRICS_HTTP_SERVER_H_
