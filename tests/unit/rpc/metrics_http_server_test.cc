#include "server/rpc/metrics_http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Sends `request` to 127.0.0.1:port and returns everything the server answered.
std::string Exchange(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) response.append(buf, static_cast<size_t>(n));
  close(fd);
  return response;
}

TEST(MetricsHttpServerTest, ServesTheMetricsTextAndNothingElse) {
  auto metrics = ServerMetrics::Create({});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  (*metrics)->OnModelLoaded("m", "evit", "3");
  auto server = MetricsHttpServer::Start("127.0.0.1", 0, metrics->get());
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);

  const std::string ok = Exchange((*server)->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(ok, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(ok, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(ok, HasSubstr("vitserve_model_info{"));
  const size_t body = ok.find("\r\n\r\n") + 4;
  EXPECT_THAT(ok, HasSubstr(absl::StrCat("Content-Length: ", ok.size() - body, "\r\n")));

  EXPECT_THAT(Exchange((*server)->port(), "GET / HTTP/1.1\r\n\r\n"), StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(Exchange((*server)->port(), "POST /metrics HTTP/1.1\r\n\r\n"),
              StartsWith("HTTP/1.1 405"));
  (*server)->Stop();
}

TEST(MetricsHttpServerTest, RefusesBadHostsAndTakenPorts) {
  auto metrics = ServerMetrics::Create({});
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(MetricsHttpServer::Start("not-an-address", 0, metrics->get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = MetricsHttpServer::Start("127.0.0.1", 0, metrics->get());
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(MetricsHttpServer::Start("127.0.0.1", (*first)->port(), metrics->get()).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace vitserve
