// The strict safetensors header parser and serialiser (torch-free).
#include "server/checkpoint/safetensors_header.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

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

TEST(SafetensorsHeaderTest, ParsesTensorsMetadataAndEscapes) {
  const std::string json = R"({"__metadata__":{"format":"pt","note":"caf\u00e9 \ud83d\ude00"},)"
                           R"( "b":{"dtype":"I64","shape":[2],"data_offsets":[4,20]},)"
                           R"( "a\"q":{"dtype":"F16","shape":[1, 2],"data_offsets":[0,4]}}   )";
  const std::string file = MakeFile(json, std::string(20, '\0'));
  absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(file);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->data_start, 8 + json.size());
  ASSERT_EQ(h->tensors.size(), 2u);
  EXPECT_EQ(h->tensors[0].name, "a\"q");  // sorted by name
  EXPECT_EQ(h->tensors[0].dtype, SafetensorsDtype::kF16);
  EXPECT_EQ(h->tensors[0].shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(h->tensors[1].name, "b");
  EXPECT_EQ(h->tensors[1].begin, 4u);
  EXPECT_EQ(h->tensors[1].end, 20u);
  EXPECT_EQ(h->metadata.at("format"), "pt");
  EXPECT_EQ(h->metadata.at("note"), "caf\xC3\xA9 \xF0\x9F\x98\x80");
}

TEST(SafetensorsHeaderTest, EmptyHeaderIsValid) {
  absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(MakeFile("{}", ""));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_TRUE(h->tensors.empty());
}

struct BadHeader {
  std::string json;
  size_t data_bytes;
  std::string expected;
};

void PrintTo(const BadHeader& c, std::ostream* os) { *os << c.json; }

class SafetensorsBadHeaderTest : public ::testing::TestWithParam<BadHeader> {};

TEST_P(SafetensorsBadHeaderTest, IsRefusedWithMessage) {
  const BadHeader& c = GetParam();
  absl::StatusOr<SafetensorsHeader> h =
      ParseSafetensorsHeader(MakeFile(c.json, std::string(c.data_bytes, '\0')));
  ASSERT_FALSE(h.ok()) << c.json;
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(h.status().message()), HasSubstr(c.expected)) << c.json;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SafetensorsBadHeaderTest,
    ::testing::Values(
        BadHeader{"[]", 0, "does not start with '{'"},
        BadHeader{R"({"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1,
                  "unsupported dtype 'F8_E4M3'"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4, "need 8"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8,
                  "expected to start at 0"},
        // Overlap: b starts inside a.
        BadHeader{R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                  8, "expected to start at 8"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 2,
                  "data section of only 2 bytes"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 12,
                  "cover 4 bytes of a data section of 12"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                  8, "duplicate tensor name 'a'"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4,
                  "expected a non-negative integer"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", 4,
                  "fraction or exponent"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}})", 4, "leading zero"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}})", 4,
                  "out of range"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4,
                  "data_offsets must be [begin, end]"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4,
                  "unexpected or repeated key 'x'"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[1]}})", 0, "lacks one of"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}x)", 4,
                  "trailing characters"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})", 4,
                  "expected ',' or '}'"},
        BadHeader{R"({"__metadata__":{"k":1}})", 0, "expected a string"},
        BadHeader{R"({"a\q":{}})", 0, "invalid escape"},
        BadHeader{R"({"\ud800":{}})", 0, "unpaired UTF-16 surrogate"},
        BadHeader{"{\"a\nb\":{}}", 0, "control character"},
        BadHeader{R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],)"
                  R"("data_offsets":[0,4]}})",
                  4, "overflows"}));

TEST(SafetensorsHeaderTest, RefusesShortOrAbsurdLengths) {
  EXPECT_THAT(std::string(ParseSafetensorsHeader("abc").status().message()),
              HasSubstr("shorter than"));
  std::string absurd(8, '\xff');
  absurd += "{}";
  EXPECT_THAT(std::string(ParseSafetensorsHeader(absurd).status().message()),
              HasSubstr("exceeds the limit"));
  std::string past_end = MakeFile("{}", "");
  past_end[0] = 100;  // claims a 100-byte header in a 10-byte file
  EXPECT_THAT(std::string(ParseSafetensorsHeader(past_end).status().message()),
              HasSubstr("runs past the end"));
}

TEST(SafetensorsHeaderTest, SerializeIsAlignedSortedAndParsesBack) {
  std::vector<SafetensorsEntry> entries = {
      {"a", SafetensorsDtype::kF32, {2}, 0, 8},
      {"b\"\n", SafetensorsDtype::kBool, {}, 8, 9},
  };
  absl::StatusOr<std::string> prefix = SerializeSafetensorsHeader(entries, {{"format", "pt"}});
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  EXPECT_EQ(prefix->size() % 8, 0u);
  EXPECT_EQ(prefix->substr(8, 31), R"({"__metadata__":{"format":"pt"})");
  absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(*prefix + std::string(9, '\0'));
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 2u);
  EXPECT_EQ(h->tensors[1].name, "b\"\n");
  EXPECT_TRUE(h->tensors[1].shape.empty());
  EXPECT_EQ(h->metadata.at("format"), "pt");
}

}  // namespace
}  // namespace vitserve
