#include "client/image_files.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vitserve::client {
namespace {

namespace fs = std::filesystem;

class ImageFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("vitclient_files_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "b" / "nested");
    fs::create_directories(root_ / "a");
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string Touch(const fs::path& rel, const std::string& content = "x") {
    const fs::path p = root_ / rel;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }

  fs::path root_;
};

TEST_F(ImageFilesTest, HasImageExtensionIsCaseInsensitive) {
  EXPECT_TRUE(HasImageExtension("x.jpg"));
  EXPECT_TRUE(HasImageExtension("dir/X.JPEG"));
  EXPECT_TRUE(HasImageExtension("a.Png"));
  EXPECT_TRUE(HasImageExtension("a.tif"));
  EXPECT_TRUE(HasImageExtension("a.webp"));
  EXPECT_FALSE(HasImageExtension("a.txt"));
  EXPECT_FALSE(HasImageExtension("jpg"));
  EXPECT_FALSE(HasImageExtension("a.jpg.bak"));
}

TEST_F(ImageFilesTest, RecursesSortedAndFiltersByExtension) {
  const std::string b2 = Touch("b/2.PNG");
  const std::string b1 = Touch("b/nested/1.jpg");
  Touch("b/notes.txt");
  const std::string a = Touch("a/z.webp");
  auto files = DiscoverImageFiles({(root_ / "b").string(), (root_ / "a").string()});
  ASSERT_TRUE(files.ok()) << files.status();
  // Argument order first, then sorted paths inside each directory.
  EXPECT_EQ(*files, (std::vector<std::string>{b2, b1, a}));
}

TEST_F(ImageFilesTest, ExplicitFilesKeptWhateverTheExtension) {
  const std::string txt = Touch("a/readme.txt");
  auto files = DiscoverImageFiles({txt});
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(*files, std::vector<std::string>{txt});
}

TEST_F(ImageFilesTest, DirectoryLinksAreNotFollowed) {
  Touch("a/img.png");
  fs::create_directory_symlink(root_ / "a", root_ / "b" / "link_to_a");
  fs::create_directory_symlink(root_ / "b", root_ / "b" / "nested" / "cycle");
  auto files = DiscoverImageFiles({(root_ / "b").string()});
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_TRUE(files->empty()) << (*files)[0];
}

TEST_F(ImageFilesTest, MissingPathIsNotFound) {
  auto files = DiscoverImageFiles({(root_ / "nope.jpg").string()});
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(files.status().message().find("nope.jpg"), std::string::npos);
}

TEST_F(ImageFilesTest, ReadFileBytesReadsBinaryAndEnforcesLimit) {
  const std::string content("\x89PNG\0\r\n", 7);
  const std::string p = Touch("a/bin.png", content);
  auto bytes = ReadFileBytes(p, 100);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, content);
  auto too_big = ReadFileBytes(p, 6);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_big.status().message().find("6-byte limit"), std::string::npos);
  EXPECT_EQ(ReadFileBytes((root_ / "missing").string(), 100).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace vitserve::client
