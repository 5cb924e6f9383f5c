#include "server/rpc/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace vitserve {
namespace {

// The fully qualified service name health is reported for (besides "").
constexpr char kServiceName[] = "vitserve.v1.InferenceService";

std::string HostPort(const std::string& host, int port) {
  return absl::StrContains(host, ':') ? absl::StrCat("[", host, "]:", port)
                                      : absl::StrCat(host, ":", port);
}

int ToMillisArg(absl::Duration d) {
  const int64_t ms = absl::ToInt64Milliseconds(d);
  return ms > std::numeric_limits<int>::max() ? std::numeric_limits<int>::max()
                                              : static_cast<int>(ms);
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(grpc::Service* service,
                                                              const GrpcServerOptions& options) {
  if (service == nullptr) return absl::InvalidArgumentError("service is required");
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port must be in [0, 65535], got ", options.port));
  }
  if (options.max_receive_message_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_receive_message_bytes must be > 0, got ",
                                                   options.max_receive_message_bytes));
  }
  // Both are process-wide switches that must be set before a server is built.
  grpc::EnableDefaultHealthCheckService(true);
  if (options.enable_reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(
      HostPort(options.host, options.port),
      options.credentials != nullptr ? options.credentials : grpc::InsecureServerCredentials(),
      &selected_port);
  builder.RegisterService(service);
  for (grpc::Service* extra : options.extra_services) {
    if (extra == nullptr) return absl::InvalidArgumentError("extra_services holds a null service");
    builder.RegisterService(extra);
  }
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ToMillisArg(options.keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ToMillisArg(options.keepalive_timeout));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             ToMillisArg(options.min_client_ping_interval));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                             ToMillisArg(options.max_connection_age));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                             ToMillisArg(options.max_connection_age_grace));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || selected_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ",
                                               HostPort(options.host, options.port),
                                               " (address in use or not local?)"));
  }
  std::unique_ptr<GrpcServer> out(new GrpcServer(std::move(server), options.host, selected_port));
  out->SetServing(false);
  return out;
}

GrpcServer::~GrpcServer() { Shutdown(absl::Now()); }

std::string GrpcServer::address() const { return HostPort(host_, port_); }

void GrpcServer::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  health->SetServingStatus(kServiceName, serving);
}

void GrpcServer::Shutdown(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  shut_down_ = true;
  SetServing(false);
  server_->Shutdown(absl::ToChronoTime(deadline));
  server_->Wait();
}

}  // namespace vitserve
