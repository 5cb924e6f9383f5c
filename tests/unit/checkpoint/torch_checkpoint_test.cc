// LoadCheckpoint on files written by PyTorch 1.13 (make_fixtures.py, run by the CTest
// fixture `checkpoint_fixtures`), compared value by value with references numpy wrote.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/types.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "server/checkpoint/checkpoint.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

class TorchCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("CHECKPOINT_FIXTURES_DIR");
    ASSERT_NE(dir, nullptr) << "CHECKPOINT_FIXTURES_DIR is unset: run through ctest, which "
                               "generates the fixtures with make_fixtures.py first";
    dir_ = dir;
    struct stat st;
    ASSERT_EQ(::stat((dir_ + "/DONE").c_str(), &st), 0)
        << "fixtures missing in " << dir_ << " (did the checkpoint_fixtures test fail?)";
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Reads NAME.ref/manifest.txt: key -> tensor ("extra:<dict>:<key>" for extra dicts).
  std::map<std::string, torch::Tensor> Reference(const std::string& name) const {
    std::map<std::string, torch::Tensor> out;
    const std::string ref = Path(name + ".ref");
    std::ifstream manifest(ref + "/manifest.txt");
    EXPECT_TRUE(manifest.good()) << ref;
    std::string line;
    while (std::getline(manifest, line)) {
      if (line.empty()) continue;
      const std::vector<std::string> f = absl::StrSplit(line, '\t');
      EXPECT_EQ(f.size(), 4u) << line;
      if (f.size() != 4) continue;
      std::vector<int64_t> shape;
      for (absl::string_view d : absl::StrSplit(f[2], ',', absl::SkipEmpty())) {
        shape.push_back(std::stoll(std::string(d)));
      }
      torch::ScalarType dtype = torch::kFloat32;
      if (f[1] == "i64") dtype = torch::kInt64;
      if (f[1] == "i32") dtype = torch::kInt32;
      if (f[1] == "u8") dtype = torch::kUInt8;
      if (f[1] == "bool") dtype = torch::kBool;
      torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(dtype));
      std::ifstream data(ref + "/" + f[3], std::ios::binary);
      data.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
      EXPECT_EQ(static_cast<size_t>(data.gcount()), t.nbytes()) << line;
      out.emplace(f[0], t);
    }
    return out;
  }

  // Loads NAME.<ext> and checks every tensor (model and extra) against NAME.ref exactly.
  void ExpectMatchesReference(const std::string& file, const std::string& ref_name) {
    absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(Path(file));
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    const std::map<std::string, torch::Tensor> ref = Reference(ref_name);
    ASSERT_FALSE(ref.empty());
    size_t expected_model = 0;
    std::map<std::string, size_t> expected_extra;
    for (const auto& [key, want] : ref) {
      const torch::Tensor* got = nullptr;
      if (key.rfind("extra:", 0) == 0) {
        const std::vector<std::string> parts = absl::StrSplit(key, absl::MaxSplits(':', 2));
        ++expected_extra[parts[1]];
        auto dict = ckpt->extra.find(parts[1]);
        ASSERT_NE(dict, ckpt->extra.end()) << "missing extra dict " << parts[1];
        auto it = dict->second.find(parts[2]);
        ASSERT_NE(it, dict->second.end()) << "missing " << key;
        got = &it->second;
      } else {
        ++expected_model;
        auto it = ckpt->model.find(key);
        ASSERT_NE(it, ckpt->model.end()) << "missing " << key;
        got = &it->second;
      }
      EXPECT_TRUE(got->is_contiguous()) << key;
      EXPECT_EQ(got->scalar_type(), want.scalar_type()) << key;
      EXPECT_EQ(got->sizes(), want.sizes()) << key;
      EXPECT_TRUE(torch::equal(*got, want)) << key;
    }
    EXPECT_EQ(ckpt->model.size(), expected_model);
    EXPECT_EQ(ckpt->extra.size(), expected_extra.size());
    for (const auto& [name, n] : expected_extra) EXPECT_EQ(ckpt->extra[name].size(), n) << name;
  }

  std::string dir_;
};

TEST_F(TorchCheckpointTest, BareStateDict) { ExpectMatchesReference("bare.pth", "bare"); }

TEST_F(TorchCheckpointTest, SafetensorsWrittenByPython) {
  ExpectMatchesReference("bare.safetensors", "bare");
}

// Python's hand-written file and SaveSafetensors follow the same conventions (metadata
// first, sorted keys, compact JSON, space padding to 8 bytes), so re-saving what was loaded
// must reproduce the file byte for byte.
TEST_F(TorchCheckpointTest, SaveSafetensorsMatchesPythonWriterByteForByte) {
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(Path("bare.safetensors"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const std::string out = Path("resaved.safetensors");
  ASSERT_TRUE(
      SaveSafetensors(ckpt->model, out, {{"format", "pt"}, {"source", "make_fixtures.py"}}).ok());
  auto read = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  const std::string want = read(Path("bare.safetensors"));
  ASSERT_FALSE(want.empty());
  EXPECT_TRUE(read(out) == want) << "SaveSafetensors output differs from the Python-written file";
  std::remove(out.c_str());
}

TEST_F(TorchCheckpointTest, ModelWithNamespaceEpochAndOptimizer) {
  ExpectMatchesReference("wrapped.pth", "wrapped");
}

TEST_F(TorchCheckpointTest, StateDictKeyWithDdpPrefix) { ExpectMatchesReference("ddp.pth", "ddp"); }

TEST_F(TorchCheckpointTest, SviteMasksGoToExtra) { ExpectMatchesReference("svite.pth", "svite"); }

TEST_F(TorchCheckpointTest, ViewsSharingStoragesAndAllDtypes) {
  ExpectMatchesReference("views.pth", "views");
}

TEST_F(TorchCheckpointTest, ViewsDoNotAliasEachOther) {
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(Path("views.pth"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  torch::Tensor full = ckpt->model.at("full");
  const float before = ckpt->model.at("offset")[0][0].item<float>();
  full.fill_(0.0f);
  EXPECT_EQ(ckpt->model.at("offset")[0][0].item<float>(), before);
}

TEST_F(TorchCheckpointTest, HalfPrecisionBecomesFloat32) {
  ExpectMatchesReference("fp16.pth", "fp16");
}

TEST_F(TorchCheckpointTest, Parameters) { ExpectMatchesReference("params.pth", "params"); }

TEST_F(TorchCheckpointTest, OsSystemPayloadIsRefusedAndNeverRuns) {
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(Path("evil_system.pth"));
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()),
              HasSubstr("checkpoint refers to forbidden global 'posix.system'; only state-dict "
                        "types are allowed"));
  struct stat st;
  EXPECT_NE(::stat(Path("pwned_marker").c_str(), &st), 0) << "the payload ran";
}

TEST_F(TorchCheckpointTest, EvalPayloadIsRefusedAndNeverRuns) {
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(Path("evil_eval.pth"));
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()),
              HasSubstr("forbidden global '__builtin__.eval'"));
  struct stat st;
  EXPECT_NE(::stat(Path("pwned_marker").c_str(), &st), 0) << "the payload ran";
}

TEST_F(TorchCheckpointTest, PickledModuleIsRefused) {
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(Path("full_module.pth"));
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()),
              HasSubstr("forbidden global 'torch.nn.modules.linear.Linear'"));
}

TEST_F(TorchCheckpointTest, TruncatedArchiveIsInvalidArgument) {
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(Path("truncated.pth"));
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("truncated.pth"));
}

TEST_F(TorchCheckpointTest, NonZipIsInvalidArgument) {
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(Path("notzip.pth"));
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()),
              HasSubstr("not a checkpoint vitserve can read"));
}

TEST_F(TorchCheckpointTest, LegacyFormatIsExplained) {
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(Path("legacy.pth"));
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("legacy"));
}

TEST_F(TorchCheckpointTest, NoStateDictNamesTopLevelKeys) {
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(Path("no_state_dict.pth"));
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("top-level keys: epoch, args"));
}

TEST_F(TorchCheckpointTest, ForgedArchiveWithSoundGeometryLoads) {
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(Path("forged_ok.pth"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_TRUE(torch::equal(ckpt->model.at("w"), torch::tensor({1.0f, 2.0f, 3.0f})));
}

struct ForgedCase {
  std::string file;
  std::string expected;
};

void PrintTo(const ForgedCase& c, std::ostream* os) { *os << c.file; }

class ForgedArchiveTest : public TorchCheckpointTest,
                          public ::testing::WithParamInterface<ForgedCase> {};

// Tensors that do not fit their storage are refused (torch.load itself reads past the
// record for forged_record_size.pth).
TEST_P(ForgedArchiveTest, IsRefused) {
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(Path(GetParam().file));
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr(GetParam().expected));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ForgedArchiveTest,
    ::testing::Values(ForgedCase{"forged_view_out_of_range.pth",
                                 "tensor 'w' reaches element 5 of storage '0' which holds only 4"},
                      ForgedCase{"forged_record_size.pth",
                                 "storage record 'data/0' holds 16 bytes, expected 8 x 4"},
                      ForgedCase{"forged_missing_record.pth",
                                 "storage record 'data/9' is missing from the archive"},
                      ForgedCase{"forged_negative_stride.pth",
                                 "tensor 'w' has a negative size or stride"}));

}  // namespace
}  // namespace vitserve
