// A minimal JSON writer for vitclient's output: objects, arrays, strings with proper
// escaping, and numbers in their shortest round-trip form.
//
// Not a general JSON library: no parsing, no pretty printing. Misuse (a value directly
// inside an object without Key(), unbalanced End*) is a programming error and produces
// invalid JSON; the writer does not check it.
//
// Thread-safety: a JsonWriter is a plain value; use one per thread. The free functions
// are pure.
#ifndef VITSERVE_CLIENT_JSON_WRITER_H_
#define VITSERVE_CLIENT_JSON_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace vitserve::client {

// `s` as a quoted JSON string: `"` `\` and control characters escaped (\n \t \r \b \f short
// forms, others as \u00XX); bytes that are not valid UTF-8 become U+FFFD, so the output
// is always valid UTF-8 JSON whatever the input (e.g. file names in a foreign encoding).
std::string JsonQuote(absl::string_view s);

// Shortest decimal that reads back as the same float / double ("0.7", not
// "0.699999988"). NaN and infinities have no JSON form and are written as null.
std::string JsonFloat(float v);
std::string JsonDouble(double v);

class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  // Inside an object: the next call writes this key's value.
  JsonWriter& Key(absl::string_view key);
  JsonWriter& String(absl::string_view v);
  JsonWriter& Float(float v);
  JsonWriter& Double(double v);
  JsonWriter& Int(int64_t v);
  JsonWriter& Uint(uint64_t v);
  JsonWriter& Bool(bool v);
  JsonWriter& Null();
  // Inserts already serialised JSON as one value (e.g. from protobuf's JSON printer).
  JsonWriter& Raw(absl::string_view json);

  const std::string& str() const { return out_; }

 private:
  void BeforeValue();
  // Opens an object or array ('{' / '['), closes one ('}' / ']').
  JsonWriter& Open(char bracket);
  JsonWriter& Close(char bracket);

  std::string out_;
  std::vector<bool> has_items_;  // one entry per open object/array
  bool after_key_ = false;
};

}  // namespace vitserve::client

#endif  // VITSERVE_CLIENT_JSON_WRITER_H_
