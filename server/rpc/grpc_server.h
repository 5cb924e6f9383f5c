// The gRPC server around InferenceServiceImpl: listening port, message-size limit,
// keepalive and connection-age channel arguments, the standard health service
// (grpc.health.v1) and server reflection.
//
// Health: NOT_SERVING from Start() until SetServing(true) (main calls it after the models
// are loaded and warmed up), NOT_SERVING again on SetServing(false) (drain). The status is
// set for the whole server ("") and for "vitserve.v1.InferenceService".
//
// Defaults, and why:
//   max_receive_message_bytes = 32 MiB: a 224x224x3 float tensor is 0.6 MB and a large
//     JPEG a few MB; 32 MiB leaves room for big images (bounded again by the
//     preprocessor's pixel limit) while refusing absurd messages before they are parsed.
//     gRPC's own default is 4 MiB.
//   keepalive_time 30 s / keepalive_timeout 10 s: the server pings idle connections so
//     dead clients (and half-open connections behind NATs) are noticed.
//   min_client_ping_interval 10 s: clients may ping that often without being cut off.
//   max_connection_age 5 min (+ 30 s grace): connections are recycled so L4 load balancers
//     rebalance long-lived clients across replicas; in-flight RPCs get the
//     grace period to finish.
//
// Thread-safety: SetServing() and Shutdown() may be called from any thread; Shutdown()
// is idempotent. The service must outlive this object.
#ifndef VITSERVE_SERVER_RPC_GRPC_SERVER_H_
#define VITSERVE_SERVER_RPC_GRPC_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace vitserve {

// gRPC's default receive limit is 4 MiB; ours (see above).
inline constexpr int kDefaultMaxReceiveMessageBytes = 32 * 1024 * 1024;

struct GrpcServerOptions {
  // Interface to bind: "0.0.0.0" (all IPv4), "127.0.0.1" (loopback), "::" (all IPv6).
  std::string host = "0.0.0.0";
  // 0 = let the OS pick a free port (see GrpcServer::port()).
  int port = 0;
  // Largest request message accepted; larger ones fail with RESOURCE_EXHAUSTED.
  int max_receive_message_bytes = kDefaultMaxReceiveMessageBytes;
  // Server-initiated keepalive pings on idle connections.
  absl::Duration keepalive_time = absl::Seconds(30);
  // How long to wait for a ping ack before closing the connection.
  absl::Duration keepalive_timeout = absl::Seconds(10);
  // Shortest client ping interval tolerated (clients pinging faster are disconnected).
  absl::Duration min_client_ping_interval = absl::Seconds(10);
  // Connections are closed (GOAWAY) after this age so load balancers can rebalance.
  absl::Duration max_connection_age = absl::Minutes(5);
  // In-flight RPCs on an aged connection get this long to finish.
  absl::Duration max_connection_age_grace = absl::Seconds(30);
  // Server reflection (grpcurl, grpc_cli).
  bool enable_reflection = true;
  // Transport security (server/rpc/tls/tls_credentials.h); null = plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // More services on the same port (e.g. inference.GRPCInferenceService); not owned.
  std::vector<grpc::Service*> extra_services;
};

class GrpcServer {
 public:
  // Builds and starts the server with `service` registered; health starts NOT_SERVING.
  // `service` is not owned. UNAVAILABLE when the address cannot be bound,
  // INVALID_ARGUMENT for out-of-range options.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(grpc::Service* service,
                                                           const GrpcServerOptions& options);
  ~GrpcServer();

  // The bound port (the chosen one when options.port was 0).
  int port() const { return port_; }
  // host:port as it can be printed ("[::1]:5000" for IPv6 hosts).
  std::string address() const;

  void SetServing(bool serving);

  // Health NOT_SERVING, stop accepting RPCs, wait for in-flight RPCs until `deadline`,
  // then cancel what is left. Idempotent.
  void Shutdown(absl::Time deadline);

 private:
  GrpcServer(std::unique_ptr<grpc::Server> server, std::string host, int port)
      : server_(std::move(server)), host_(std::move(host)), port_(port) {}

  std::unique_ptr<grpc::Server> server_;
  const std::string host_;
  const int port_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_GRPC_SERVER_H_
