#include "server/rpc/tls/tls_credentials.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace vitserve {
namespace {

// PEM files are small; anything larger is not one.
constexpr std::streamoff kMaxPemBytes = 1 << 20;

}  // namespace

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat(what, ": cannot read '", path, "'"));
  const std::streamoff size = in.tellg();
  if (size <= 0 || size > kMaxPemBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": '", path, "' is ", size, " bytes; not a PEM file"));
  }
  in.seekg(0);
  std::ostringstream out;
  out << in.rdbuf();
  std::string text = out.str();
  if (!absl::StrContains(text, "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": '", path, "' is not PEM (no '-----BEGIN' line)"));
  }
  return text;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& files) {
  if (files.cert_chain.empty() && files.private_key.empty() && files.client_ca.empty()) {
    return grpc::InsecureServerCredentials();
  }
  if (files.cert_chain.empty() || files.private_key.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both --tls_cert and --tls_key (and --tls_client_ca only on top of them)");
  }
  absl::StatusOr<std::string> cert = ReadPemFile(files.cert_chain, "--tls_cert");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPemFile(files.private_key, "--tls_key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!files.client_ca.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile(files.client_ca, "--tls_client_ca");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    bool use_tls, const ClientTlsFiles& files) {
  if (!use_tls) {
    if (!files.server_ca.empty() || !files.cert_chain.empty() || !files.private_key.empty()) {
      return absl::InvalidArgumentError("TLS files given without TLS turned on");
    }
    return grpc::InsecureChannelCredentials();
  }
  if (files.cert_chain.empty() != files.private_key.empty()) {
    return absl::InvalidArgumentError("a client certificate needs both --tls_cert and --tls_key");
  }
  grpc::SslCredentialsOptions options;
  if (!files.server_ca.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile(files.server_ca, "--tls_ca");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
  }
  if (!files.cert_chain.empty()) {
    absl::StatusOr<std::string> cert = ReadPemFile(files.cert_chain, "--tls_cert");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPemFile(files.private_key, "--tls_key");
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *cert;
    options.pem_private_key = *key;
  }
  return grpc::SslCredentials(options);
}

}  // namespace vitserve
