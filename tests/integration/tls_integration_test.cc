// TLS and mutual TLS end to end: the real vitserve binary with certificates made by the
// real `openssl` (a test CA, a server certificate for 127.0.0.1, a client certificate,
// and a second, untrusted CA with its own client certificate), real gRPC clients and the
// real vitclient. Who gets in:
//   TLS server:  plaintext client refused; TLS client trusting the CA served.
//   mTLS server: TLS client without a certificate refused; client with a certificate
//                from the untrusted CA refused; client with the CA's certificate served.
#include <signal.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/subprocess.h"
#include "tests/integration/test_model_repository.h"

namespace vitserve {
namespace {

constexpr absl::Duration kStartupTimeout = absl::Seconds(120);
constexpr absl::Duration kRpcTimeout = absl::Seconds(10);
constexpr absl::Duration kExitTimeout = absl::Seconds(60);

// Runs openssl with `args`; fails the test on a non-zero exit.
void OpenSsl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/openssl"};  // RunCommand takes a path
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<CommandResult> r = RunCommand(argv, absl::Seconds(60));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << "openssl " << args[0] << " failed";
}

// A CA (key + self-signed certificate) named `name` in `dir`.
void MakeCa(const std::string& dir, const std::string& name) {
  OpenSsl({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=" + name,
           "-keyout", dir + "/" + name + ".key", "-out", dir + "/" + name + ".crt"});
}

// A key and a certificate for `cn` (with `san` as subjectAltName) signed by CA `ca`.
void MakeLeaf(const std::string& dir, const std::string& name, const std::string& cn,
              const std::string& san, const std::string& ca) {
  const std::string p = dir + "/" + name;
  OpenSsl({"req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + cn, "-keyout", p + ".key",
           "-out", p + ".csr"});
  std::ofstream(p + ".ext") << "subjectAltName=" << san << "\n";
  OpenSsl({"x509", "-req", "-in", p + ".csr", "-CA", dir + "/" + ca + ".crt", "-CAkey",
           dir + "/" + ca + ".key", "-CAcreateserial", "-days", "2", "-extfile", p + ".ext", "-out",
           p + ".crt"});
}

struct Server {
  std::unique_ptr<Subprocess> process;
  std::string address;
  std::string stderr_path;
};

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::string> dir = MakeTempDir("vitserve_tls_");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = new std::string(*dir);
    MakeCa(*dir_, "ca");
    MakeCa(*dir_, "rogue_ca");
    MakeLeaf(*dir_, "server", "localhost", "DNS:localhost,IP:127.0.0.1", "ca");
    MakeLeaf(*dir_, "client", "client", "DNS:client", "ca");
    MakeLeaf(*dir_, "rogue_client", "client", "DNS:client", "rogue_ca");
    TestModelOptions model;
    model.method = "dense";
    ASSERT_TRUE(WriteTestModel(*dir_ + "/models", model).ok());
    tls_ = StartServer("tls", {});
    mtls_ = StartServer("mtls", {"--tls_client_ca=" + *dir_ + "/ca.crt"});
  }

  static void TearDownTestSuite() {
    for (Server** s : {&tls_, &mtls_}) {
      if (*s != nullptr && (*s)->process != nullptr) {
        (*s)->process->Signal(SIGTERM);
        absl::StatusOr<int> code = (*s)->process->Wait(kExitTimeout);
        EXPECT_TRUE(code.ok() && *code == 0) << ReadFileOrEmpty((*s)->stderr_path);
      }
      delete *s;
      *s = nullptr;
    }
    if (dir_ != nullptr) RemoveTree(*dir_);
    delete dir_;
    dir_ = nullptr;
  }

  static Server* StartServer(const std::string& name, const std::vector<std::string>& extra) {
    auto* s = new Server;
    s->stderr_path = *dir_ + "/" + name + ".stderr";
    std::vector<std::string> argv = {VITSERVE_BINARY,
                                     "--model_repository=" + *dir_ + "/models",
                                     "--host=127.0.0.1",
                                     "--port=0",
                                     "--metrics_port=-1",
                                     "--scheduler=fixed",
                                     "--tls_cert=" + *dir_ + "/server.crt",
                                     "--tls_key=" + *dir_ + "/server.key"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    absl::StatusOr<std::unique_ptr<Subprocess>> p = Subprocess::Start(argv, s->stderr_path);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return s;
    s->process = *std::move(p);
    absl::StatusOr<std::string> line = s->process->WaitForLine(kListeningPrefix, kStartupTimeout);
    EXPECT_TRUE(line.ok()) << line.status() << ReadFileOrEmpty(s->stderr_path);
    if (line.ok()) s->address = std::string(absl::StripPrefix(*line, kListeningPrefix));
    return s;
  }

  void SetUp() override {
    ASSERT_TRUE(tls_ != nullptr && !tls_->address.empty()) << "the TLS server did not start";
    ASSERT_TRUE(mtls_ != nullptr && !mtls_->address.empty()) << "the mTLS server did not start";
  }

  static std::string Pem(const std::string& name) { return ReadFileOrEmpty(*dir_ + "/" + name); }

  // TLS credentials trusting our CA, optionally presenting `client` (.crt/.key).
  static std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& client = "") {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Pem("ca.crt");
    if (!client.empty()) {
      o.pem_cert_chain = Pem(client + ".crt");
      o.pem_private_key = Pem(client + ".key");
    }
    return grpc::SslCredentials(o);
  }

  // grpc.health.v1 Check over a fresh channel.
  static grpc::Status Check(const std::string& address,
                            const std::shared_ptr<grpc::ChannelCredentials>& creds) {
    auto stub = grpc::health::v1::Health::NewStub(grpc::CreateChannel(address, creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status s = stub->Check(&ctx, {}, &response);
    if (s.ok() && response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "not SERVING");
    }
    return s;
  }

  static std::string* dir_;
  static Server* tls_;
  static Server* mtls_;
};

std::string* TlsTest::dir_ = nullptr;
Server* TlsTest::tls_ = nullptr;
Server* TlsTest::mtls_ = nullptr;

TEST_F(TlsTest, TlsServerServesTlsClientsOnly) {
  EXPECT_TRUE(Check(tls_->address, Tls()).ok());
  const grpc::Status plain = Check(tls_->address, grpc::InsecureChannelCredentials());
  EXPECT_EQ(plain.error_code(), grpc::StatusCode::UNAVAILABLE) << plain.error_message();
}

TEST_F(TlsTest, ClientMustTrustTheServerCertificate) {
  grpc::SslCredentialsOptions wrong_roots;
  wrong_roots.pem_root_certs = Pem("rogue_ca.crt");
  EXPECT_EQ(Check(tls_->address, grpc::SslCredentials(wrong_roots)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, MutualTlsNeedsACertificateFromTheClientCa) {
  EXPECT_TRUE(Check(mtls_->address, Tls("client")).ok());
  EXPECT_EQ(Check(mtls_->address, Tls()).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "no client certificate";
  EXPECT_EQ(Check(mtls_->address, Tls("rogue_client")).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "certificate from an untrusted CA";
  EXPECT_EQ(Check(mtls_->address, grpc::InsecureChannelCredentials()).error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "plaintext";
}

#ifdef VITCLIENT_BINARY
TEST_F(TlsTest, VitclientSpeaksMutualTls) {
  auto run = [&](const std::vector<std::string>& flags) {
    std::vector<std::string> argv = {VITCLIENT_BINARY, "health", "--server=" + mtls_->address,
                                     "--timeout_ms=10000"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    absl::StatusOr<CommandResult> r = RunCommand(argv, absl::Seconds(60));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CommandResult{};
  };
  const CommandResult ok =
      run({"--tls_ca=" + *dir_ + "/ca.crt", "--tls_cert=" + *dir_ + "/client.crt",
           "--tls_key=" + *dir_ + "/client.key"});
  EXPECT_EQ(ok.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(ok.out, "SERVING")) << ok.out;
  EXPECT_NE(run({"--tls_ca=" + *dir_ + "/ca.crt"}).exit_code, 0) << "no client certificate";
  EXPECT_NE(run({}).exit_code, 0) << "plaintext";
  // A missing file is a usage error, named, before any connection.
  EXPECT_EQ(run({"--tls_ca=" + *dir_ + "/missing.crt"}).exit_code, 2);
}
#endif

// Starts vitserve with --tls_key=`key` (and the good certificate); returns its exit code
// and stderr. The server must not come up.
std::pair<int, std::string> StartWithKey(const std::string& dir, const std::string& key) {
  const std::string err = dir + "/" + key + ".stderr";
  absl::StatusOr<std::unique_ptr<Subprocess>> p =
      Subprocess::Start({VITSERVE_BINARY, "--model_repository=" + dir + "/models",
                         "--host=127.0.0.1", "--port=0", "--metrics_port=-1", "--scheduler=fixed",
                         "--tls_cert=" + dir + "/server.crt", "--tls_key=" + dir + "/" + key},
                        err);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return {-1, ""};
  absl::StatusOr<int> code = (*p)->Wait(kExitTimeout);
  EXPECT_TRUE(code.ok()) << code.status();
  return {code.ok() ? *code : -1, ReadFileOrEmpty(err)};
}

TEST_F(TlsTest, BadCertificateFilesStopTheServerAtStartup) {
  // A CSR is PEM but not a key: gRPC fails to build credentials or to bind.
  EXPECT_NE(StartWithKey(*dir_, "server.csr").first, 0);
  // A file that is not PEM at all is named in the error.
  std::ofstream(*dir_ + "/garbage.key") << "not a key\n";
  const auto [code, err] = StartWithKey(*dir_, "garbage.key");
  EXPECT_NE(code, 0);
  EXPECT_TRUE(absl::StrContains(err, "--tls_key")) << err;
}

}  // namespace
}  // namespace vitserve
