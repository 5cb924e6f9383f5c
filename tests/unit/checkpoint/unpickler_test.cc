// The restricted unpickler on hand-assembled pickles (torch-free).
#include "server/checkpoint/unpickler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace vitserve {
namespace {

using ::testing::HasSubstr;
using Kind = PickleValue::Kind;

std::string U32(uint32_t v) {
  std::string s;
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  return s;
}

// BINUNICODE
std::string Str(const std::string& s) { return "X" + U32(static_cast<uint32_t>(s.size())) + s; }
// BININT1
std::string Int1(int v) { return std::string("K") + static_cast<char>(v); }

// BINPUT / BINGET (built with std::string: their operand may be a NUL byte).
std::string Put(int i) { return std::string("q") + static_cast<char>(i); }
std::string Get(int i) { return std::string("h") + static_cast<char>(i); }

const std::string kProto2 = "\x80\x02";

// What torch.save writes for {'w': <float tensor of shape (2, 3) on storage '0' of 6>}
// (an OrderedDict, memoised and re-used like the real thing).
std::string TensorDictPickle() {
  return kProto2 + "}" + Put(0) + "(" + Str("w") + Put(1) +
         "ctorch._utils\n_rebuild_tensor_v2\nq\x02" + "((" + Str("storage") +
         "ctorch\nFloatStorage\nq\x03" + Str("0") + Str("cpu") + Int1(6) + "tQ" + Int1(0) +
         Int1(2) + Int1(3) + "\x86" + Int1(3) + Int1(1) + "\x86" + "\x89" +
         "ccollections\nOrderedDict\nq\x04)R" + "tRu.";
}

TEST(UnpicklerTest, DecodesTorchStyleTensorDict) {
  absl::StatusOr<PickleValuePtr> v = Unpickle(TensorDictPickle());
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ((*v)->kind, Kind::kDict);
  const PickleValue* w = (*v)->Find("w");
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(w->kind, Kind::kTensor);
  EXPECT_EQ(w->tensor.storage.type, "Float");
  EXPECT_EQ(w->tensor.storage.key, "0");
  EXPECT_EQ(w->tensor.storage.location, "cpu");
  EXPECT_EQ(w->tensor.storage.numel, 6);
  EXPECT_EQ(w->tensor.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w->tensor.stride, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(w->tensor.storage_offset, 0);
}

TEST(UnpicklerTest, DecodesScalarsAndContainers) {
  // {'i': -2 (LONG1), 'j': 70000 (BININT), 'k': 300 (BININT2), 'f': 1.5, 't': True,
  //  'n': None, 'l': [1, 2], 's': 'é' (SHORT_BINUNICODE), 'big': 2**70}
  const std::string bin_float_1_5("G\x3f\xf8\x00\x00\x00\x00\x00\x00", 9);
  const std::string pickle = kProto2 + "}(" + Str("i") + std::string("\x8a\x01\xfe", 3) + Str("j") +
                             "J" + U32(70000) + Str("k") + std::string("M\x2c\x01", 3) + Str("f") +
                             bin_float_1_5 + Str("t") + "\x88" + Str("n") + "N" + Str("l") + "](" +
                             Int1(1) + Int1(2) + "e" + Str("s") + "\x8c\x02\xc3\xa9" + Str("big") +
                             std::string("\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40", 11) + "u.";
  absl::StatusOr<PickleValuePtr> v = Unpickle(pickle);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ((*v)->Find("i")->integer, -2);
  EXPECT_EQ((*v)->Find("j")->integer, 70000);
  EXPECT_EQ((*v)->Find("k")->integer, 300);
  EXPECT_EQ((*v)->Find("f")->real, 1.5);
  EXPECT_TRUE((*v)->Find("t")->boolean);
  EXPECT_EQ((*v)->Find("n")->kind, Kind::kNone);
  ASSERT_EQ((*v)->Find("l")->items.size(), 2u);
  EXPECT_EQ((*v)->Find("l")->items[1]->integer, 2);
  EXPECT_EQ((*v)->Find("s")->str, "\xc3\xa9");
  EXPECT_EQ((*v)->Find("big")->kind, Kind::kBigInt);
}

TEST(UnpicklerTest, MemoOneAndFourByteIndices) {
  // ["a", 7, "a", 7]: "a" memoised by LONG_BINPUT 300 and read by LONG_BINGET, 7 by BINPUT 5
  // and BINGET.
  const std::string pickle =
      kProto2 + "(" + Str("a") + "r" + U32(300) + Int1(7) + Put(5) + "j" + U32(300) + Get(5) + "l.";
  absl::StatusOr<PickleValuePtr> v = Unpickle(pickle);
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ((*v)->kind, Kind::kList);
  ASSERT_EQ((*v)->items.size(), 4u);
  EXPECT_EQ((*v)->items[0]->str, "a");
  EXPECT_EQ((*v)->items[1]->integer, 7);
  EXPECT_EQ((*v)->items[2], (*v)->items[0]);
  EXPECT_EQ((*v)->items[3], (*v)->items[1]);
}

TEST(UnpicklerTest, SetItemOnExistingKeyReplaces) {
  const std::string pickle = kProto2 + "}(" + Str("a") + Int1(1) + Str("a") + Int1(2) + "u.";
  absl::StatusOr<PickleValuePtr> v = Unpickle(pickle);
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ((*v)->entries.size(), 1u);
  EXPECT_EQ((*v)->Find("a")->integer, 2);
}

TEST(UnpicklerTest, NamespaceIsInert) {
  const std::string pickle = kProto2 + "cargparse\nNamespace\n)\x81}(" + Str("lr") + Int1(3) +
                             Str("model") + Str("deit_small") + "ub.";
  absl::StatusOr<PickleValuePtr> v = Unpickle(pickle);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ((*v)->kind, Kind::kObject);
  EXPECT_EQ((*v)->str, "argparse.Namespace");
  EXPECT_EQ((*v)->Find("model")->str, "deit_small");
}

struct BadPickle {
  std::string name;
  std::string bytes;
  std::string expected;
};

void PrintTo(const BadPickle& c, std::ostream* os) { *os << c.name; }

class UnpicklerBadTest : public ::testing::TestWithParam<BadPickle> {};

TEST_P(UnpicklerBadTest, IsRefused) {
  absl::StatusOr<PickleValuePtr> v = Unpickle(GetParam().bytes);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(v.status().message()), HasSubstr(GetParam().expected));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, UnpicklerBadTest,
    ::testing::Values(
        BadPickle{"os_system", kProto2 + "cposix\nsystem\n" + Str("touch x") + "\x85R.",
                  "checkpoint refers to forbidden global 'posix.system'; only state-dict types "
                  "are allowed"},
        BadPickle{"stack_global_eval",
                  kProto2 + "\x8c\x08" + "builtins" + "\x8c\x04" + "eval" + "\x93.",
                  "forbidden global 'builtins.eval'"},
        BadPickle{"subprocess", kProto2 + "csubprocess\nPopen\n.",
                  "forbidden global 'subprocess.Popen'"},
        BadPickle{"storage_called", kProto2 + "ctorch\nFloatStorage\n)R.", "cannot be called"},
        BadPickle{"ordered_dict_args", kProto2 + "ccollections\nOrderedDict\n" + Int1(1) + "\x85R.",
                  "OrderedDict called with arguments"},
        BadPickle{"empty", "", "without a STOP"},
        BadPickle{"no_stop", kProto2 + "}", "without a STOP"},
        BadPickle{"stop_empty", kProto2 + ".", "STOP with an empty stack"},
        BadPickle{"underflow", kProto2 + "s.", "stack underflow"},
        BadPickle{"pop_below_mark", kProto2 + "N(0.", "stack underflow"},
        BadPickle{"tuple2_underflow", kProto2 + "N\x86.", "stack underflow"},
        BadPickle{"no_mark", kProto2 + "Nt.", "no MARK"},
        BadPickle{"memo_missing", kProto2 + "h\x07.", "memo index 7 was never stored"},
        BadPickle{"memo_huge", kProto2 + "Nr\xff\xff\xff\xff.", "memo index too large"},
        BadPickle{"long_memo_missing", kProto2 + "j" + U32(0x80000000u) + ".", "never stored"},
        BadPickle{"string_past_end", kProto2 + "X\xff\xff\xff\x7f" + "abc.", "past the end"},
        BadPickle{"truncated_int", kProto2 + "J\x01", "truncated operand"},
        BadPickle{"unsupported_opcode", kProto2 + "I1\n.", "unsupported pickle opcode"},
        BadPickle{"protocol", "\x80\x09.", "unsupported pickle protocol 9"},
        BadPickle{"unterminated_global", kProto2 + "ctorch", "unterminated GLOBAL"},
        BadPickle{"setitem_on_list", kProto2 + "]NNs.", "not a dict"},
        BadPickle{"append_on_dict", kProto2 + "}Na.", "not a list"},
        BadPickle{"odd_setitems", kProto2 + "}(Nu.", "odd number"},
        BadPickle{"self_list", kProto2 + "]" + Put(0) + Get(0) + "a.", "self-referencing"},
        BadPickle{"indirect_cycle",
                  kProto2 + "]" + Put(0) + "]" + Put(1) + Get(0) + "a" + Get(1) + "0" + Get(0) +
                      Get(1) + "a.",
                  "self-referencing"},
        BadPickle{"bad_persid", kProto2 + Str("storage") + "\x85Q.", "persistent id"},
        BadPickle{"reduce_not_callable", kProto2 + "N)R.", "not callable"},
        BadPickle{"tensor_no_storage",
                  kProto2 + "ctorch._utils\n_rebuild_tensor_v2\n(N" + Int1(0) + ")))tR.",
                  "not a storage"},
        BadPickle{"build_on_int", kProto2 + Int1(1) + "}b.", "BUILD on a int"}));

TEST(UnpicklerTest, OptionsBoundStackAndMemo) {
  UnpickleOptions options;
  options.max_stack = 2;
  EXPECT_TRUE(Unpickle(kProto2 + "NN.", options).ok());
  EXPECT_THAT(std::string(Unpickle(kProto2 + "NNN.", options).status().message()),
              HasSubstr("stack limit exceeded"));
  options = UnpickleOptions();
  options.max_memo_index = 10;
  EXPECT_TRUE(Unpickle(kProto2 + "N" + Put(10) + ".", options).ok());
  EXPECT_THAT(std::string(Unpickle(kProto2 + "N" + Put(11) + ".", options).status().message()),
              HasSubstr("memo index too large"));
}

// Regression (fuzzing): TUPLE1 nests one level per input byte, and releasing a
// million-deep value through shared_ptr's recursive destructor overflowed the stack, both
// for a returned value and for one left on the stack by a malformed pickle.
TEST(UnpicklerTest, DeeplyNestedValuesAreReleasedWithoutRecursion) {
  constexpr int kDepth = 1'000'000;
  const std::string nested = kProto2 + "N" + std::string(kDepth, '\x85');
  {
    absl::StatusOr<PickleValuePtr> v = Unpickle(nested + ".");
    ASSERT_TRUE(v.ok()) << v.status();
    int depth = 0;
    for (const PickleValue* p = v->get(); p->kind == Kind::kTuple; p = p->items[0].get()) {
      ++depth;
    }
    EXPECT_EQ(depth, kDepth);
  }
  EXPECT_THAT(std::string(Unpickle(nested + "\xff").status().message()),
              HasSubstr("unsupported pickle opcode"));
}

// Every truncation of a valid pickle is an error, and no single-byte corruption crashes.
TEST(UnpicklerTest, TruncationsAndCorruptionsNeverCrash) {
  const std::string good = TensorDictPickle();
  ASSERT_TRUE(Unpickle(good).ok());
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(Unpickle(good.substr(0, n)).ok()) << "prefix " << n;
  }
  int refused = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (const int delta : {1, 0x40, 0x80}) {
      std::string bad = good;
      bad[i] = static_cast<char>(static_cast<unsigned char>(bad[i]) + delta);
      if (!Unpickle(bad).ok()) ++refused;
    }
  }
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace vitserve
