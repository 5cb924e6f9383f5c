// WriteFileAtomically on a real temporary directory: the file appears whole or not at all.
#include "server/checkpoint/atomic_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace vitserve {
namespace {

namespace fs = std::filesystem;

class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "atomic_file_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string Read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  fs::path dir_;
};

TEST_F(AtomicFileTest, WritesContentsAndLeavesNoTemporary) {
  const fs::path path = dir_ / "config.pbtxt";
  ASSERT_TRUE(WriteFileAtomically(path.string(), std::string("a\0b", 3)).ok());
  EXPECT_EQ(Read(path), std::string("a\0b", 3));
  EXPECT_FALSE(fs::exists(dir_ / "config.pbtxt.tmp"));
}

TEST_F(AtomicFileTest, ReplacesAnExistingFile) {
  const fs::path path = dir_ / "f";
  ASSERT_TRUE(WriteFileAtomically(path.string(), "old contents").ok());
  ASSERT_TRUE(WriteFileAtomically(path.string(), "new").ok());
  EXPECT_EQ(Read(path), "new");
}

TEST_F(AtomicFileTest, WriterErrorKeepsTheOldFileAndRemovesTheTemporary) {
  const fs::path path = dir_ / "f";
  ASSERT_TRUE(WriteFileAtomically(path.string(), "old").ok());
  const absl::Status s = WriteFileAtomically(path.string(), [](std::ostream& out) {
    out << "half";
    return absl::InternalError("writer gave up");
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(), "writer gave up");
  EXPECT_EQ(Read(path), "old");
  EXPECT_FALSE(fs::exists(dir_ / "f.tmp"));
}

TEST_F(AtomicFileTest, UnwritableDirectoryIsPermissionDenied) {
  const absl::Status s = WriteFileAtomically((dir_ / "missing" / "f").string(), "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("cannot write"), absl::string_view::npos);
}

TEST_F(AtomicFileTest, FailedRenameRemovesTheTemporary) {
  // A directory in the way: the rename over it fails.
  const fs::path path = dir_ / "taken";
  fs::create_directories(path / "child");
  const absl::Status s = WriteFileAtomically(path.string(), "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("cannot rename"), absl::string_view::npos);
  EXPECT_FALSE(fs::exists(dir_ / "taken.tmp"));
}

}  // namespace
}  // namespace vitserve
