// safetensors: the LibTorch read/write layer and LoadCheckpoint dispatch.
#include "server/checkpoint/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/types.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/safetensors_header.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

// 8-byte little-endian length + `json` + `data`.
std::string MakeFile(const std::string& json, const std::string& data) {
  std::string out;
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) {
    out.push_back(static_cast<char>(n & 0xFF));
    n >>= 8;
  }
  return out + json + data;
}

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/vitserve_st_" + name;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(SafetensorsTest, SaveLoadRoundTripKeepsValuesAndTypes) {
  StateDict sd;
  sd["w"] = torch::arange(12, torch::kFloat32).reshape({3, 4}).t();  // non-contiguous
  sd["half"] = torch::tensor({1.5, -2.25, 65504.0}).to(torch::kFloat16);
  sd["bf"] = torch::tensor({0.5, 3.0}).to(torch::kBFloat16);
  sd["dbl"] = torch::tensor({1.0 / 3.0}, torch::kFloat64);
  sd["idx"] = torch::tensor({int64_t{-7}, int64_t{1} << 40});
  sd["i32"] = torch::tensor({3, -4}, torch::kInt32);
  sd["u8"] = torch::tensor({0, 255}, torch::kUInt8);
  sd["mask"] = torch::tensor({true, false, true});
  sd["scalar"] = torch::tensor(2.5f);
  sd["empty"] = torch::zeros({0, 3});
  const std::string path = TempPath("roundtrip.safetensors");
  ASSERT_TRUE(SaveSafetensors(sd, path, {{"format", "pt"}}).ok());

  const std::string bytes = ReadAll(path);
  absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(bytes);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->data_start % 8, 0u);

  std::map<std::string, std::string> meta;
  absl::StatusOr<StateDict> back = ReadSafetensors(bytes, &meta);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(meta.at("format"), "pt");
  ASSERT_EQ(back->size(), sd.size());
  for (const auto& [name, t] : sd) {
    const torch::Tensor& got = back->at(name);
    EXPECT_TRUE(got.is_contiguous()) << name;
    EXPECT_EQ(got.sizes(), t.sizes()) << name;
    if (t.is_floating_point()) {
      EXPECT_EQ(got.scalar_type(), torch::kFloat32) << name;
      EXPECT_TRUE(torch::equal(got, t.to(torch::kFloat32))) << name;
    } else {
      EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
      EXPECT_TRUE(torch::equal(got, t)) << name;
    }
  }
  std::remove(path.c_str());
}

TEST(SafetensorsTest, LoadCheckpointStripsModulePrefix) {
  StateDict sd;
  sd["module.head.weight"] = torch::ones({2, 2});
  sd["module.module.cls_token"] = torch::zeros({1, 1, 4});
  const std::string path = TempPath("ddp.safetensors");
  ASSERT_TRUE(SaveSafetensors(sd, path).ok());
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->model.count("head.weight"), 1u);
  EXPECT_EQ(ckpt->model.count("cls_token"), 1u);
  EXPECT_TRUE(ckpt->extra.empty());
  std::remove(path.c_str());
}

TEST(SafetensorsTest, PrefixCollisionIsAnError) {
  StateDict sd;
  sd["module.a"] = torch::ones({1});
  sd["a"] = torch::zeros({1});
  const std::string path = TempPath("collide.safetensors");
  ASSERT_TRUE(SaveSafetensors(sd, path).ok());
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(path);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("collides"));
  std::remove(path.c_str());
}

TEST(SafetensorsTest, BoolBytesMustBeZeroOrOne) {
  const std::string file = MakeFile(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})",
                                    std::string("\x01\x02", 2));
  absl::StatusOr<StateDict> sd = ReadSafetensors(file);
  EXPECT_EQ(sd.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(sd.status().message()), HasSubstr("other than 0 or 1"));
}

TEST(SafetensorsTest, SaveRefusesUnsupportedDtype) {
  StateDict sd;
  sd["c"] = torch::zeros({2}, torch::kComplexFloat);
  absl::Status s = SaveSafetensors(sd, TempPath("complex.safetensors"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'c'"));
}

TEST(CheckpointTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadCheckpoint(TempPath("does_not_exist.pth")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(CheckpointTest, GarbageIsInvalidArgument) {
  const std::string path = TempPath("garbage.bin");
  std::ofstream(path, std::ios::binary) << "this is not a checkpoint at all";
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(path);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()),
              HasSubstr("not a checkpoint vitserve can read"));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace vitserve
