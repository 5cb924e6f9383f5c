#include "client/json_writer.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace vitserve::client {
namespace {

TEST(JsonQuoteTest, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(JsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(JsonQuote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(JsonQuote("l1\nl2\tx\r\b\f"), "\"l1\\nl2\\tx\\r\\b\\f\"");
  EXPECT_EQ(JsonQuote(std::string("\x01\x1f\x7f", 3)), "\"\\u0001\\u001f\\u007f\"");
  EXPECT_EQ(JsonQuote(std::string("a\0b", 3)), "\"a\\u0000b\"");
  EXPECT_EQ(JsonQuote("/slash is fine/"), "\"/slash is fine/\"");
}

TEST(JsonQuoteTest, KeepsValidUtf8) {
  EXPECT_EQ(JsonQuote("caf\xC3\xA9"), "\"caf\xC3\xA9\"");                    // é
  EXPECT_EQ(JsonQuote("\xE2\x82\xAC"), "\"\xE2\x82\xAC\"");                  // €
  EXPECT_EQ(JsonQuote("\xF0\x9F\x90\x88 cat"), "\"\xF0\x9F\x90\x88 cat\"");  // 4-byte
}

TEST(JsonQuoteTest, ReplacesInvalidUtf8WithReplacementCharacter) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(JsonQuote("a\xFF"
                      "b"),
            "\"a" + fffd + "b\"");                                         // never valid
  EXPECT_EQ(JsonQuote("end\xC3"), "\"end" + fffd + "\"");                  // truncated sequence
  EXPECT_EQ(JsonQuote("\xC0\xAF"), "\"" + fffd + fffd + "\"");             // overlong '/'
  EXPECT_EQ(JsonQuote("\xED\xA0\x80"), "\"" + fffd + fffd + fffd + "\"");  // surrogate
  EXPECT_EQ(JsonQuote("\xF4\x90\x80\x80"), "\"" + fffd + fffd + fffd + fffd + "\"");  // > U+10FFFF
}

TEST(JsonNumberTest, ShortestRoundTrip) {
  EXPECT_EQ(JsonFloat(0.7f), "0.7");
  EXPECT_EQ(JsonFloat(0.25f), "0.25");
  EXPECT_EQ(JsonFloat(1e-5f), "1e-05");
  EXPECT_EQ(JsonFloat(150.0f), "150");
  EXPECT_EQ(JsonFloat(-0.0f), "0");
  EXPECT_EQ(JsonDouble(0.1), "0.1");
  EXPECT_EQ(JsonDouble(4.6e9), "4600000000");
  const double third = 1.0 / 3.0;
  EXPECT_EQ(std::strtod(JsonDouble(third).c_str(), nullptr), third);
  const float f = 0.123456789f;
  EXPECT_EQ(std::strtof(JsonFloat(f).c_str(), nullptr), f);
  EXPECT_LE(JsonFloat(f).size(), 11u);  // at most 9 significant digits
}

TEST(JsonNumberTest, NonFiniteIsNull) {
  EXPECT_EQ(JsonFloat(std::numeric_limits<float>::quiet_NaN()), "null");
  EXPECT_EQ(JsonDouble(std::numeric_limits<double>::infinity()), "null");
  EXPECT_EQ(JsonDouble(-std::numeric_limits<double>::infinity()), "null");
}

TEST(JsonWriterTest, NestedStructureWithCommas) {
  JsonWriter w;
  w.BeginObject();
  w.Key("a").Int(-3);
  w.Key("b").BeginArray().Uint(1).Bool(true).Null().String("x").EndArray();
  w.Key("c").BeginObject().EndObject();
  w.Key("d").BeginArray().BeginObject().Key("e").Float(0.5f).EndObject().BeginArray().EndArray();
  w.EndArray();
  w.Key("f").Raw("{\"g\":1}");
  w.EndObject();
  EXPECT_EQ(w.str(), R"({"a":-3,"b":[1,true,null,"x"],"c":{},"d":[{"e":0.5},[]],"f":{"g":1}})");
}

TEST(JsonWriterTest, KeysAreEscaped) {
  JsonWriter w;
  w.BeginObject().Key("we\"ird").String("v").EndObject();
  EXPECT_EQ(w.str(), R"({"we\"ird":"v"})");
}

}  // namespace
}  // namespace vitserve::client
