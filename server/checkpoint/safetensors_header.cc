#include "server/checkpoint/safetensors_header.h"

#include <algorithm>
#include <limits>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/util/enum_names.h"

namespace vitserve {
namespace {

constexpr int kLengthPrefixBytes = 8;
// Header padding unit: the data section starts 8-byte aligned.
constexpr uint64_t kHeaderAlignment = 8;
// Deepest nesting the format uses: root object -> tensor object -> shape array.
constexpr int kMaxTensorRank = 64;
constexpr absl::string_view kMetadataKey = "__metadata__";

constexpr EnumNameEntry<SafetensorsDtype> kDtypeNames[] = {
    {SafetensorsDtype::kF32, "F32"},   {SafetensorsDtype::kF16, "F16"},
    {SafetensorsDtype::kBF16, "BF16"}, {SafetensorsDtype::kF64, "F64"},
    {SafetensorsDtype::kI64, "I64"},   {SafetensorsDtype::kI32, "I32"},
    {SafetensorsDtype::kU8, "U8"},     {SafetensorsDtype::kBool, "BOOL"},
};

// A recursive-descent reader over the JSON text of the header. Every method returns an
// error naming the byte offset where the input stopped making sense.
class HeaderReader {
 public:
  explicit HeaderReader(absl::string_view text) : text_(text) {}

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors header: ", what, " at byte ", pos_, " of the header"));
  }

  void SkipWhitespace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool AtEnd() const { return pos_ >= text_.size(); }

  // Consumes `c` after optional whitespace.
  absl::Status Expect(char c) {
    SkipWhitespace();
    if (AtEnd() || text_[pos_] != c) {
      return Error(absl::StrCat("expected '", std::string(1, c), "'"));
    }
    ++pos_;
    return absl::OkStatus();
  }

  // True (and consumed) if the next non-blank character is `c`.
  bool Consume(char c) {
    SkipWhitespace();
    if (!AtEnd() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  absl::StatusOr<std::string> ReadString() {
    SkipWhitespace();
    if (AtEnd() || text_[pos_] != '"') return Error("expected a string");
    ++pos_;
    std::string out;
    while (true) {
      if (AtEnd()) return Error("unterminated string");
      const unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) return Error("control character in string");
      if (c != '\\') {
        out.push_back(static_cast<char>(c));
        ++pos_;
        continue;
      }
      ++pos_;
      if (AtEnd()) return Error("unterminated escape");
      const char e = text_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out.push_back(e);
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          absl::StatusOr<uint32_t> cp = ReadHex4();
          if (!cp.ok()) return cp.status();
          uint32_t code = *cp;
          if (code >= 0xD800 && code <= 0xDBFF) {  // high surrogate: a low one must follow
            if (pos_ + 2 > text_.size() || text_[pos_] != '\\' || text_[pos_ + 1] != 'u') {
              return Error("unpaired UTF-16 surrogate in \\u escape");
            }
            pos_ += 2;
            absl::StatusOr<uint32_t> low = ReadHex4();
            if (!low.ok()) return low.status();
            if (*low < 0xDC00 || *low > 0xDFFF) return Error("invalid UTF-16 surrogate pair");
            code = 0x10000 + ((code - 0xD800) << 10) + (*low - 0xDC00);
          } else if (code >= 0xDC00 && code <= 0xDFFF) {
            return Error("unpaired UTF-16 surrogate in \\u escape");
          }
          AppendUtf8(code, &out);
          break;
        }
        default:
          return Error(absl::StrCat("invalid escape '\\", std::string(1, e), "'"));
      }
    }
  }

  // A JSON non-negative integer without sign, fraction or exponent, <= `max`.
  absl::StatusOr<uint64_t> ReadUnsigned(uint64_t max) {
    SkipWhitespace();
    if (AtEnd() || text_[pos_] < '0' || text_[pos_] > '9') {
      return Error("expected a non-negative integer");
    }
    if (text_[pos_] == '0' && pos_ + 1 < text_.size() && text_[pos_ + 1] >= '0' &&
        text_[pos_ + 1] <= '9') {
      return Error("integer with a leading zero");
    }
    uint64_t value = 0;
    while (!AtEnd() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      const uint64_t digit = static_cast<uint64_t>(text_[pos_] - '0');
      if (value > (max - digit) / 10) return Error("integer out of range");
      value = value * 10 + digit;
      ++pos_;
    }
    if (!AtEnd() && (text_[pos_] == '.' || text_[pos_] == 'e' || text_[pos_] == 'E')) {
      return Error("expected an integer, got a fraction or exponent");
    }
    return value;
  }

  // [a, b, ...] of non-negative integers <= `max`, at most `max_len` of them.
  absl::StatusOr<std::vector<uint64_t>> ReadUnsignedArray(uint64_t max, size_t max_len) {
    if (absl::Status s = Expect('['); !s.ok()) return s;
    std::vector<uint64_t> out;
    if (Consume(']')) return out;
    while (true) {
      if (out.size() >= max_len) return Error("array too long");
      absl::StatusOr<uint64_t> v = ReadUnsigned(max);
      if (!v.ok()) return v.status();
      out.push_back(*v);
      if (Consume(']')) return out;
      if (absl::Status s = ExpectSeparator(']'); !s.ok()) return s;
    }
  }

  // Consumes the ',' between members; names `close` in the error as the alternative.
  absl::Status ExpectSeparator(char close) {
    SkipWhitespace();
    if (AtEnd() || text_[pos_] != ',') {
      return Error(absl::StrCat("expected ',' or '", std::string(1, close), "'"));
    }
    ++pos_;
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<uint32_t> ReadHex4() {
    if (pos_ + 4 > text_.size()) return Error("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = text_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') {
        v |= static_cast<uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        v |= static_cast<uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        v |= static_cast<uint32_t>(h - 'A' + 10);
      } else {
        return Error("invalid hex digit in \\u escape");
      }
    }
    return v;
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

absl::Status ReadMetadata(HeaderReader& r, std::map<std::string, std::string>* metadata) {
  if (absl::Status s = r.Expect('{'); !s.ok()) return s;
  if (r.Consume('}')) return absl::OkStatus();
  while (true) {
    absl::StatusOr<std::string> key = r.ReadString();
    if (!key.ok()) return key.status();
    if (absl::Status s = r.Expect(':'); !s.ok()) return s;
    absl::StatusOr<std::string> value = r.ReadString();
    if (!value.ok()) return value.status();
    if (!metadata->emplace(*key, *value).second) {
      return r.Error(absl::StrCat("duplicate __metadata__ key '", *key, "'"));
    }
    if (r.Consume('}')) return absl::OkStatus();
    if (absl::Status s = r.ExpectSeparator('}'); !s.ok()) return s;
  }
}

absl::Status ReadTensor(HeaderReader& r, SafetensorsEntry* entry) {
  if (absl::Status s = r.Expect('{'); !s.ok()) return s;
  bool has_dtype = false, has_shape = false, has_offsets = false;
  constexpr uint64_t kMaxDim = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (!r.Consume('}')) {
    while (true) {
      absl::StatusOr<std::string> key = r.ReadString();
      if (!key.ok()) return key.status();
      if (absl::Status s = r.Expect(':'); !s.ok()) return s;
      if (*key == "dtype" && !has_dtype) {
        absl::StatusOr<std::string> name = r.ReadString();
        if (!name.ok()) return name.status();
        absl::StatusOr<SafetensorsDtype> dtype = ParseSafetensorsDtype(*name);
        if (!dtype.ok()) {
          return r.Error(absl::StrCat("tensor '", entry->name, "': ", dtype.status().message()));
        }
        entry->dtype = *dtype;
        has_dtype = true;
      } else if (*key == "shape" && !has_shape) {
        absl::StatusOr<std::vector<uint64_t>> dims = r.ReadUnsignedArray(kMaxDim, kMaxTensorRank);
        if (!dims.ok()) return dims.status();
        entry->shape.assign(dims->begin(), dims->end());
        has_shape = true;
      } else if (*key == "data_offsets" && !has_offsets) {
        absl::StatusOr<std::vector<uint64_t>> offsets =
            r.ReadUnsignedArray(std::numeric_limits<uint64_t>::max(), 2);
        if (!offsets.ok()) return offsets.status();
        if (offsets->size() != 2) {
          return r.Error(
              absl::StrCat("tensor '", entry->name, "': data_offsets must be [begin, end]"));
        }
        entry->begin = (*offsets)[0];
        entry->end = (*offsets)[1];
        has_offsets = true;
      } else {
        return r.Error(absl::StrCat("tensor '", entry->name, "': unexpected or repeated key '",
                                    *key, "' (allowed once each: dtype, shape, data_offsets)"));
      }
      if (r.Consume('}')) break;
      if (absl::Status s = r.ExpectSeparator('}'); !s.ok()) return s;
    }
  }
  if (!has_dtype || !has_shape || !has_offsets) {
    return r.Error(
        absl::StrCat("tensor '", entry->name, "' lacks one of dtype, shape, data_offsets"));
  }
  return absl::OkStatus();
}

void AppendJsonString(absl::string_view s, std::string* out) {
  out->push_back('"');
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(ch);
    } else if (c < 0x20) {
      constexpr char kHex[] = "0123456789abcdef";
      out->append("\\u00");
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 0xF]);
    } else {
      out->push_back(ch);
    }
  }
  out->push_back('"');
}

}  // namespace

absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype) {
  return EnumName(kDtypeNames, dtype, "?");
}

absl::StatusOr<SafetensorsDtype> ParseSafetensorsDtype(absl::string_view name) {
  return ParseEnumName(kDtypeNames, name, "unsupported dtype");
}

int SafetensorsDtypeSize(SafetensorsDtype dtype) {
  switch (dtype) {
    case SafetensorsDtype::kF64:
    case SafetensorsDtype::kI64:
      return 8;
    case SafetensorsDtype::kF32:
    case SafetensorsDtype::kI32:
      return 4;
    case SafetensorsDtype::kF16:
    case SafetensorsDtype::kBF16:
      return 2;
    case SafetensorsDtype::kU8:
    case SafetensorsDtype::kBool:
      return 1;
  }
  return 1;
}

namespace {

// Reads the header's JSON object into `header` (tensors in file order, metadata).
absl::Status ReadHeaderObject(absl::string_view text, SafetensorsHeader* header_out) {
  SafetensorsHeader& header = *header_out;
  HeaderReader r(text);
  bool seen_metadata = false;
  std::set<std::string> names;
  if (absl::Status s = r.Expect('{'); !s.ok()) return s;
  if (!r.Consume('}')) {
    while (true) {
      absl::StatusOr<std::string> key = r.ReadString();
      if (!key.ok()) return key.status();
      if (absl::Status s = r.Expect(':'); !s.ok()) return s;
      if (*key == kMetadataKey) {
        if (seen_metadata) return r.Error("duplicate __metadata__");
        seen_metadata = true;
        if (absl::Status s = ReadMetadata(r, &header.metadata); !s.ok()) return s;
      } else {
        if (!names.insert(*key).second) {
          return r.Error(absl::StrCat("duplicate tensor name '", *key, "'"));
        }
        SafetensorsEntry entry;
        entry.name = std::move(*key);
        if (absl::Status s = ReadTensor(r, &entry); !s.ok()) return s;
        header.tensors.push_back(std::move(entry));
      }
      if (r.Consume('}')) break;
      if (absl::Status s = r.ExpectSeparator('}'); !s.ok()) return s;
    }
  }
  r.SkipWhitespace();
  if (!r.AtEnd()) return r.Error("trailing characters after the header object");
  return absl::OkStatus();
}

// The tensors must tile the data section of `data_size` bytes: sorted by offset, each
// starting where the previous one ended, sizes matching shape x dtype, the last ending at
// the file's end.
absl::Status CheckTiling(const std::vector<SafetensorsEntry>& tensors, uint64_t data_size) {
  std::vector<const SafetensorsEntry*> by_offset;
  by_offset.reserve(tensors.size());
  for (const SafetensorsEntry& e : tensors) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
              return std::make_pair(a->begin, a->end) < std::make_pair(b->begin, b->end);
            });
  uint64_t expected_begin = 0;
  for (const SafetensorsEntry* e : by_offset) {
    if (e->begin != expected_begin || e->end < e->begin) {
      return absl::InvalidArgumentError(absl::StrCat("safetensors: tensor '", e->name,
                                                     "' has data_offsets [", e->begin, ", ", e->end,
                                                     "], expected to start at ", expected_begin,
                                                     " (offsets must be contiguous, in range "
                                                     "and non-overlapping)"));
    }
    uint64_t bytes = static_cast<uint64_t>(SafetensorsDtypeSize(e->dtype));
    for (const int64_t d : e->shape) {
      const uint64_t ud = static_cast<uint64_t>(d);
      if (ud != 0 && bytes > std::numeric_limits<uint64_t>::max() / ud) {
        return absl::InvalidArgumentError(
            absl::StrCat("safetensors: tensor '", e->name, "' shape overflows"));
      }
      bytes *= ud;
    }
    if (bytes != e->end - e->begin) {
      return absl::InvalidArgumentError(absl::StrCat(
          "safetensors: tensor '", e->name, "' spans ", e->end - e->begin,
          " bytes but its shape and dtype ", SafetensorsDtypeName(e->dtype), " need ", bytes));
    }
    if (e->end > data_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: tensor '", e->name, "' ends at byte ", e->end,
                       " of a data section of only ", data_size, " bytes (truncated file?)"));
    }
    expected_begin = e->end;
  }
  if (expected_begin != data_size) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: the tensors cover ",
                                                   expected_begin, " bytes of a data section of ",
                                                   data_size, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view file) {
  if (file.size() < kLengthPrefixBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors: file of ", file.size(), " bytes is shorter than the 8-byte length prefix"));
  }
  uint64_t header_len = 0;
  for (int i = kLengthPrefixBytes - 1; i >= 0; --i) {
    header_len = (header_len << 8) | static_cast<unsigned char>(file[i]);
  }
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: header length ", header_len,
                                                   " exceeds the limit of ",
                                                   kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_len > file.size() - kLengthPrefixBytes) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: header length ", header_len,
                                                   " runs past the end of the ", file.size(),
                                                   "-byte file (truncated?)"));
  }
  const absl::string_view text = file.substr(kLengthPrefixBytes, header_len);
  if (text.empty() || text[0] != '{') {
    return absl::InvalidArgumentError("safetensors: header does not start with '{'");
  }

  SafetensorsHeader header;
  header.data_start = kLengthPrefixBytes + header_len;
  if (absl::Status st = ReadHeaderObject(text, &header); !st.ok()) return st;

  if (absl::Status st = CheckTiling(header.tensors, file.size() - header.data_start); !st.ok()) {
    return st;
  }
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.name < b.name; });
  return header;
}

absl::StatusOr<std::string> SerializeSafetensorsHeader(
    const std::vector<SafetensorsEntry>& tensors,
    const std::map<std::string, std::string>& metadata) {
  std::string json = "{";
  bool first = true;
  if (!metadata.empty()) {
    AppendJsonString(kMetadataKey, &json);
    json.append(":{");
    bool first_meta = true;
    for (const auto& [k, v] : metadata) {
      if (!first_meta) json.push_back(',');
      first_meta = false;
      AppendJsonString(k, &json);
      json.push_back(':');
      AppendJsonString(v, &json);
    }
    json.push_back('}');
    first = false;
  }
  for (const SafetensorsEntry& e : tensors) {
    if (e.name == kMetadataKey) {
      return absl::InvalidArgumentError("safetensors: a tensor may not be named __metadata__");
    }
    if (!first) json.push_back(',');
    first = false;
    AppendJsonString(e.name, &json);
    absl::StrAppend(&json, ":{\"dtype\":\"", SafetensorsDtypeName(e.dtype), "\",\"shape\":[");
    for (size_t i = 0; i < e.shape.size(); ++i) {
      if (e.shape[i] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("safetensors: tensor '", e.name, "' has a negative dimension"));
      }
      if (i > 0) json.push_back(',');
      absl::StrAppend(&json, e.shape[i]);
    }
    absl::StrAppend(&json, "],\"data_offsets\":[", e.begin, ",", e.end, "]}");
  }
  json.push_back('}');
  const uint64_t padding = (kHeaderAlignment - json.size() % kHeaderAlignment) % kHeaderAlignment;
  json.append(padding, ' ');
  std::string out(kLengthPrefixBytes, '\0');
  uint64_t len = json.size();
  for (int i = 0; i < kLengthPrefixBytes; ++i) {
    out[i] = static_cast<char>(len & 0xFF);
    len >>= 8;
  }
  out.append(json);
  return out;
}

}  // namespace vitserve
