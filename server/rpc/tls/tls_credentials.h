// gRPC transport security from PEM files: server credentials (TLS, or mutual TLS when a
// client CA is given) and the matching client channel credentials. Plaintext when no
// file is named, so the same flags turn security on and off.
//
// Files are read once, when the credentials are made: errors name the flag's file and
// what is wrong (NOT_FOUND: cannot be read; INVALID_ARGUMENT: not PEM, or an incomplete
// combination such as a certificate without its key). Thread-safe (no shared state).
//
// Test CA and certificates: docs/production.md ("TLS and mutual TLS") has the openssl
// commands; tests/integration/tls_integration_test.cc generates its own with them.
#ifndef VITSERVE_SERVER_RPC_TLS_TLS_CREDENTIALS_H_
#define VITSERVE_SERVER_RPC_TLS_TLS_CREDENTIALS_H_

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace vitserve {

struct ServerTlsFiles {
  std::string cert_chain;   // PEM server certificate (chain); with private_key -> TLS
  std::string private_key;  // PEM private key of cert_chain
  // PEM CA bundle; non-empty -> mutual TLS: clients must present a certificate signed by
  // it, and connections without one are refused during the handshake.
  std::string client_ca;
};

// InsecureServerCredentials when every field is empty; TLS when cert_chain and
// private_key are set; mutual TLS when client_ca is set too.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& files);

struct ClientTlsFiles {
  // PEM CA bundle the server certificate must chain to; empty = gRPC's default roots.
  std::string server_ca;
  std::string cert_chain;   // PEM client certificate for mutual TLS (with private_key)
  std::string private_key;  // PEM private key of cert_chain
};

// InsecureChannelCredentials when `use_tls` is false (then every field must be empty);
// SslCredentials otherwise.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    bool use_tls, const ClientTlsFiles& files);

// The contents of a PEM file (checked to contain "-----BEGIN "); `what` names it in
// errors (e.g. "--tls_cert").
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& what);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_TLS_TLS_CREDENTIALS_H_
