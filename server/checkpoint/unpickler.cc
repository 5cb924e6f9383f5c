#include "server/checkpoint/unpickler.h"

#include <cstring>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/checkpoint/pickle_globals.h"
#include "server/checkpoint/pickle_opcodes.h"

namespace vitserve {
namespace {

using Kind = PickleValue::Kind;
// The opcodes read as their pickle.py names in the switch below.
using namespace pickle_op;  // NOLINT(build/namespaces)

PickleValuePtr Make(Kind kind) { return MakePickleValue(kind); }

// Cycle checks may visit this many container slots per input byte in total.
constexpr size_t kVisitBudgetPerByte = 16;

// Highest pickle protocol understood (only the opcodes of pickle_opcodes.h, though).
constexpr int kMaxProtocol = 5;

bool IsContainer(const PickleValue& v) {
  return v.kind == Kind::kTuple || v.kind == Kind::kList || v.kind == Kind::kDict ||
         v.kind == Kind::kObject;
}

// Key identity for dict de-duplication (SETITEM on an existing key replaces its value).
// Only scalars are indexed; other keys are appended as they come.
bool ScalarKey(const PickleValue& k, std::string* out) {
  switch (k.kind) {
    case Kind::kString:
      *out = absl::StrCat("s", k.str);
      return true;
    case Kind::kInt:
      *out = absl::StrCat("i", k.integer);
      return true;
    case Kind::kBool:
      *out = absl::StrCat("i", k.boolean ? 1 : 0);  // Python: True == 1
      return true;
    case Kind::kNone:
      *out = "n";
      return true;
    default:
      return false;
  }
}

class Unpickler {
 public:
  Unpickler(absl::string_view bytes, const UnpickleOptions& options)
      : in_(bytes), options_(options), visit_budget_(kVisitBudgetPerByte * bytes.size() + 1024) {}

  absl::StatusOr<PickleValuePtr> Run() {
    while (true) {
      if (pos_ >= in_.size()) return Error("pickle ends without a STOP opcode");
      op_pos_ = pos_;
      op_ = static_cast<uint8_t>(in_[pos_++]);
      if (op_ == kStop) {
        if (stack_.empty()) return Error("STOP with an empty stack");
        return stack_.back();
      }
      if (absl::Status s = Step(); !s.ok()) return s;
      if (stack_.size() > options_.max_stack) return Error("stack limit exceeded");
    }
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrFormat(
        "malformed checkpoint pickle: %s (opcode 0x%02x at byte %d)", what, op_, op_pos_));
  }

  absl::Status Need(size_t n) const {
    if (n > in_.size() - pos_) return Error("truncated operand");
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> ReadLE(int n) {
    if (absl::Status s = Need(static_cast<size_t>(n)); !s.ok()) return s;
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(in_[pos_ + i]);
    pos_ += static_cast<size_t>(n);
    return v;
  }

  absl::StatusOr<std::string> ReadBytes(uint64_t n) {
    if (n > in_.size() - pos_) return Error("length runs past the end of the pickle");
    std::string s(in_.substr(pos_, static_cast<size_t>(n)));
    pos_ += static_cast<size_t>(n);
    return s;
  }

  absl::StatusOr<std::string> ReadLine() {
    const size_t nl = in_.find('\n', pos_);
    if (nl == absl::string_view::npos) return Error("unterminated GLOBAL operand");
    std::string s(in_.substr(pos_, nl - pos_));
    pos_ = nl + 1;
    return s;
  }

  absl::Status Push(PickleValuePtr v) {
    stack_.push_back(std::move(v));
    return absl::OkStatus();
  }

  absl::StatusOr<PickleValuePtr> Pop() {
    if (stack_.size() <= MarkFloor()) return Error("stack underflow");
    PickleValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }

  // The top two values, popped: {the one below, the top} (REDUCE's callable and args,
  // NEWOBJ's class and args, SETITEM's key and value, STACK_GLOBAL's module and name).
  absl::StatusOr<std::pair<PickleValuePtr, PickleValuePtr>> PopTwo() {
    absl::StatusOr<PickleValuePtr> top = Pop();
    if (!top.ok()) return top.status();
    absl::StatusOr<PickleValuePtr> below = Pop();
    if (!below.ok()) return below.status();
    return std::make_pair(*std::move(below), *std::move(top));
  }

  // The stack may not be popped below the most recent MARK except by the MARK-consuming
  // opcodes.
  size_t MarkFloor() const { return marks_.empty() ? 0 : marks_.back(); }

  // Pops everything above the last MARK, and the mark.
  absl::StatusOr<std::vector<PickleValuePtr>> PopMark() {
    if (marks_.empty()) return Error("no MARK on the stack");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PickleValuePtr> out(std::make_move_iterator(stack_.begin() + m),
                                    std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return out;
  }

  absl::StatusOr<PickleValuePtr> Top() {
    if (stack_.size() <= MarkFloor()) return Error("stack underflow");
    return stack_.back();
  }

  absl::Status Put(uint64_t index) {
    if (index > options_.max_memo_index) return Error("memo index too large");
    absl::StatusOr<PickleValuePtr> top = Top();
    if (!top.ok()) return top.status();
    memo_[static_cast<uint32_t>(index)] = *top;
    return absl::OkStatus();
  }

  absl::Status Get(uint64_t index) {
    auto it = index > UINT32_MAX ? memo_.end() : memo_.find(static_cast<uint32_t>(index));
    if (it == memo_.end()) return Error(absl::StrCat("memo index ", index, " was never stored"));
    return Push(it->second);
  }

  absl::Status MakeInt(int64_t v) {
    PickleValuePtr p = Make(Kind::kInt);
    p->integer = v;
    return Push(std::move(p));
  }

  absl::Status MakeString(Kind kind, absl::StatusOr<std::string> s) {
    if (!s.ok()) return s.status();
    PickleValuePtr p = Make(kind);
    p->str = *std::move(s);
    return Push(std::move(p));
  }

  // LONG1 / LONG4 operand: little-endian two's complement of `n` bytes.
  absl::Status MakeLong(uint64_t n) {
    absl::StatusOr<std::string> raw = ReadBytes(n);
    if (!raw.ok()) return raw.status();
    if (raw->size() > sizeof(int64_t)) {
      PickleValuePtr p = Make(Kind::kBigInt);
      p->str = *std::move(raw);
      return Push(std::move(p));
    }
    uint64_t v = 0;
    for (size_t i = raw->size(); i-- > 0;) v = (v << 8) | static_cast<unsigned char>((*raw)[i]);
    if (!raw->empty() && (static_cast<unsigned char>(raw->back()) & 0x80) != 0 &&
        raw->size() < sizeof(int64_t)) {
      v |= ~uint64_t{0} << (8 * raw->size());  // sign-extend
    }
    int64_t s;
    std::memcpy(&s, &v, sizeof(s));
    return MakeInt(s);
  }

  absl::Status MakeTuple(std::vector<PickleValuePtr> items) {
    PickleValuePtr t = Make(Kind::kTuple);
    t->items = std::move(items);
    return Push(std::move(t));
  }

  absl::Status MakeTupleN(int n) {
    if (stack_.size() < MarkFloor() + static_cast<size_t>(n)) return Error("stack underflow");
    std::vector<PickleValuePtr> items(std::make_move_iterator(stack_.end() - n),
                                      std::make_move_iterator(stack_.end()));
    stack_.resize(stack_.size() - static_cast<size_t>(n));
    return MakeTuple(std::move(items));
  }

  // True if `target` is reachable from `from` (so inserting `from` into `target` would
  // make a cycle). Visits are charged to a budget proportional to the input size, so a
  // hostile pickle cannot make this quadratic.
  absl::StatusOr<bool> Reaches(const PickleValue* from, const PickleValue* target) {
    if (!IsContainer(*from)) return from == target;
    std::vector<const PickleValue*> todo = {from};
    std::unordered_set<const PickleValue*> seen;
    while (!todo.empty()) {
      const PickleValue* v = todo.back();
      todo.pop_back();
      if (v == target) return true;
      if (!IsContainer(*v) || !seen.insert(v).second) continue;
      if (visit_budget_ < v->items.size() + 2 * v->entries.size()) {
        return Error("pickle structure too complex");
      }
      visit_budget_ -= v->items.size() + 2 * v->entries.size();
      for (const PickleValuePtr& c : v->items) todo.push_back(c.get());
      for (const auto& [k, val] : v->entries) {
        todo.push_back(k.get());
        todo.push_back(val.get());
      }
    }
    return false;
  }

  absl::Status RefuseCycle(const PickleValue& value, const PickleValue& container) {
    absl::StatusOr<bool> cycle = Reaches(&value, &container);
    if (!cycle.ok()) return cycle.status();
    if (*cycle) return Error("self-referencing containers are not supported");
    return absl::OkStatus();
  }

  absl::Status SetItem(const PickleValuePtr& dict, PickleValuePtr key, PickleValuePtr value) {
    if (dict->kind != Kind::kDict) {
      return Error(absl::StrCat("SETITEM on a ", dict->KindName(), ", not a dict"));
    }
    if (absl::Status s = RefuseCycle(*key, *dict); !s.ok()) return s;
    if (absl::Status s = RefuseCycle(*value, *dict); !s.ok()) return s;
    std::string id;
    if (ScalarKey(*key, &id)) {
      // The index holds a reference to the dict so that its address is never reused by
      // another dict while the index exists.
      DictIndex& index = dict_index_[dict.get()];
      index.dict = dict;
      auto [it, inserted] = index.positions.emplace(id, dict->entries.size());
      if (!inserted) {
        dict->entries[it->second].second = std::move(value);
        return absl::OkStatus();
      }
    }
    dict->entries.emplace_back(std::move(key), std::move(value));
    return absl::OkStatus();
  }

  absl::Status Append(PickleValue& list, PickleValuePtr value) {
    if (list.kind != Kind::kList) {
      return Error(absl::StrCat("APPEND on a ", list.KindName(), ", not a list"));
    }
    if (absl::Status s = RefuseCycle(*value, list); !s.ok()) return s;
    list.items.push_back(std::move(value));
    return absl::OkStatus();
  }

  absl::Status PushGlobal(const std::string& module, const std::string& name) {
    const std::string full = absl::StrCat(module, ".", name);
    if (!IsAllowedPickleGlobal(full)) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint refers to forbidden global '", full,
                       "'; only state-dict types are allowed (byte ", op_pos_, " of the pickle)"));
    }
    PickleValuePtr g = Make(Kind::kGlobal);
    g->str = full;
    return Push(std::move(g));
  }

  // REDUCE, NEWOBJ, BINPERSID: pop the operands, build the value (pickle_globals.h).
  absl::Status PushBuilt(absl::StatusOr<PickleValuePtr> v) {
    if (!v.ok()) return Error(v.status().message());
    return Push(*std::move(v));
  }

  absl::Status Reduce() {
    absl::StatusOr<std::pair<PickleValuePtr, PickleValuePtr>> callable_args = PopTwo();
    if (!callable_args.ok()) return callable_args.status();
    return PushBuilt(CallPickleGlobal(*callable_args->first, *callable_args->second));
  }

  absl::Status NewObj() {
    absl::StatusOr<std::pair<PickleValuePtr, PickleValuePtr>> cls_args = PopTwo();
    if (!cls_args.ok()) return cls_args.status();
    return PushBuilt(NewPickleObject(*cls_args->first, *cls_args->second));
  }

  absl::Status PersistentId() {
    absl::StatusOr<PickleValuePtr> pid = Pop();
    if (!pid.ok()) return pid.status();
    return PushBuilt(StorageFromPersistentId(**pid));
  }

  absl::Status Build() {
    absl::StatusOr<PickleValuePtr> state = Pop();
    if (!state.ok()) return state.status();
    absl::StatusOr<PickleValuePtr> target = Top();
    if (!target.ok()) return target.status();
    PickleValue& obj = **target;
    const PickleValue& st = **state;
    switch (obj.kind) {
      case Kind::kObject:
        // Namespace: the state is its __dict__.
        if (st.kind != Kind::kDict) return Error("BUILD state of an object is not a dict");
        if (absl::Status s = RefuseCycle(st, obj); !s.ok()) return s;
        obj.entries.insert(obj.entries.end(), st.entries.begin(), st.entries.end());
        return absl::OkStatus();
      case Kind::kDict:
        // nn.Module.state_dict() carries a `_metadata` attribute (module versions): inert,
        // dropped.
      case Kind::kTensor:
        // Tensor subclasses' __dict__ state: dropped.
        if (st.kind != Kind::kDict && st.kind != Kind::kNone && st.kind != Kind::kTuple) {
          return Error("unexpected BUILD state");
        }
        return absl::OkStatus();
      default:
        return Error(absl::StrCat("BUILD on a ", obj.KindName()));
    }
  }

  absl::Status Step() {
    switch (op_) {
      case kProto: {
        absl::StatusOr<uint64_t> v = ReadLE(1);
        if (!v.ok()) return v.status();
        if (*v > kMaxProtocol) return Error(absl::StrCat("unsupported pickle protocol ", *v));
        return absl::OkStatus();
      }
      case kFrame:
        return ReadLE(8).status();  // framing is only a read-ahead hint
      case kMark:
        marks_.push_back(stack_.size());
        return absl::OkStatus();
      case kPop:
        return Pop().status();
      case kPopMark:
        return PopMark().status();
      case kDup: {
        absl::StatusOr<PickleValuePtr> top = Top();
        if (!top.ok()) return top.status();
        return Push(*top);
      }
      case kNone:
        return Push(Make(Kind::kNone));
      case kNewTrue:
      case kNewFalse: {
        PickleValuePtr b = Make(Kind::kBool);
        b->boolean = op_ == kNewTrue;
        return Push(std::move(b));
      }
      case kBinInt: {
        absl::StatusOr<uint64_t> v = ReadLE(4);
        if (!v.ok()) return v.status();
        return MakeInt(static_cast<int32_t>(static_cast<uint32_t>(*v)));
      }
      case kBinInt1:
      case kBinInt2: {
        absl::StatusOr<uint64_t> v = ReadLE(op_ == kBinInt1 ? 1 : 2);
        if (!v.ok()) return v.status();
        return MakeInt(static_cast<int64_t>(*v));
      }
      case kLong1:
      case kLong4: {
        absl::StatusOr<uint64_t> n = ReadLE(op_ == kLong1 ? 1 : 4);
        if (!n.ok()) return n.status();
        return MakeLong(*n);
      }
      case kBinFloat: {
        absl::StatusOr<std::string> raw = ReadBytes(8);  // big-endian IEEE 754
        if (!raw.ok()) return raw.status();
        uint64_t bits = 0;
        for (const char c : *raw) bits = (bits << 8) | static_cast<unsigned char>(c);
        PickleValuePtr f = Make(Kind::kFloat);
        std::memcpy(&f->real, &bits, sizeof(bits));
        return Push(std::move(f));
      }
      case kBinUnicode:
      case kBinString:
      case kBinBytes: {
        absl::StatusOr<uint64_t> n = ReadLE(4);
        if (!n.ok()) return n.status();
        return MakeString(op_ == kBinBytes ? Kind::kBytes : Kind::kString, ReadBytes(*n));
      }
      case kShortBinUnicode:
      case kShortBinString:
      case kShortBinBytes: {
        absl::StatusOr<uint64_t> n = ReadLE(1);
        if (!n.ok()) return n.status();
        return MakeString(op_ == kShortBinBytes ? Kind::kBytes : Kind::kString, ReadBytes(*n));
      }
      case kEmptyDict:
        return Push(Make(Kind::kDict));
      case kEmptyList:
        return Push(Make(Kind::kList));
      case kEmptyTuple:
        return MakeTuple({});
      case kTuple1:
        return MakeTupleN(1);
      case kTuple2:
        return MakeTupleN(2);
      case kTuple3:
        return MakeTupleN(3);
      case kTuple: {
        absl::StatusOr<std::vector<PickleValuePtr>> items = PopMark();
        if (!items.ok()) return items.status();
        return MakeTuple(*std::move(items));
      }
      case kList: {
        absl::StatusOr<std::vector<PickleValuePtr>> items = PopMark();
        if (!items.ok()) return items.status();
        PickleValuePtr l = Make(Kind::kList);
        l->items = *std::move(items);
        return Push(std::move(l));
      }
      case kDict:
      case kSetItems: {
        absl::StatusOr<std::vector<PickleValuePtr>> items = PopMark();
        if (!items.ok()) return items.status();
        if (items->size() % 2 != 0) return Error("odd number of items for a dict");
        PickleValuePtr d;
        if (op_ == kDict) {
          d = Make(Kind::kDict);
        } else {
          absl::StatusOr<PickleValuePtr> top = Top();
          if (!top.ok()) return top.status();
          d = *top;
        }
        for (size_t i = 0; i < items->size(); i += 2) {
          if (absl::Status s = SetItem(d, (*items)[i], (*items)[i + 1]); !s.ok()) return s;
        }
        return op_ == kDict ? Push(std::move(d)) : absl::OkStatus();
      }
      case kSetItem: {
        absl::StatusOr<std::pair<PickleValuePtr, PickleValuePtr>> key_value = PopTwo();
        if (!key_value.ok()) return key_value.status();
        absl::StatusOr<PickleValuePtr> d = Top();
        if (!d.ok()) return d.status();
        return SetItem(*d, std::move(key_value->first), std::move(key_value->second));
      }
      case kAppend: {
        absl::StatusOr<PickleValuePtr> value = Pop();
        if (!value.ok()) return value.status();
        absl::StatusOr<PickleValuePtr> l = Top();
        if (!l.ok()) return l.status();
        return Append(**l, *std::move(value));
      }
      case kAppends: {
        absl::StatusOr<std::vector<PickleValuePtr>> items = PopMark();
        if (!items.ok()) return items.status();
        absl::StatusOr<PickleValuePtr> l = Top();
        if (!l.ok()) return l.status();
        for (PickleValuePtr& v : *items) {
          if (absl::Status s = Append(**l, std::move(v)); !s.ok()) return s;
        }
        return absl::OkStatus();
      }
      case kBinPut:
      case kLongBinPut:
      case kBinGet:
      case kLongBinGet: {
        // The memo index: 1 byte after BINPUT / BINGET, 4 after the LONG_ forms.
        absl::StatusOr<uint64_t> i = ReadLE(op_ == kBinPut || op_ == kBinGet ? 1 : 4);
        if (!i.ok()) return i.status();
        return op_ == kBinPut || op_ == kLongBinPut ? Put(*i) : Get(*i);
      }
      case kMemoize:
        return Put(memo_.size());
      case kGlobal: {
        absl::StatusOr<std::string> module = ReadLine();
        if (!module.ok()) return module.status();
        absl::StatusOr<std::string> name = ReadLine();
        if (!name.ok()) return name.status();
        return PushGlobal(*module, *name);
      }
      case kStackGlobal: {
        absl::StatusOr<std::pair<PickleValuePtr, PickleValuePtr>> module_name = PopTwo();
        if (!module_name.ok()) return module_name.status();
        const PickleValue& module = *module_name->first;
        const PickleValue& name = *module_name->second;
        if (name.kind != Kind::kString || module.kind != Kind::kString) {
          return Error("STACK_GLOBAL operands are not strings");
        }
        return PushGlobal(module.str, name.str);
      }
      case kReduce:
        return Reduce();
      case kNewObj:
        return NewObj();
      case kBuild:
        return Build();
      case kBinPersId:
        return PersistentId();
      default:
        return Error("unsupported pickle opcode");
    }
  }

  absl::string_view in_;
  const UnpickleOptions& options_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  uint8_t op_ = 0;
  std::vector<PickleValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, PickleValuePtr> memo_;
  struct DictIndex {
    PickleValuePtr dict;
    std::unordered_map<std::string, size_t> positions;  // scalar key -> entry
  };
  std::unordered_map<const PickleValue*, DictIndex> dict_index_;
  // Container visits left for cycle checks (see Reaches).
  size_t visit_budget_;
};

}  // namespace

absl::StatusOr<PickleValuePtr> Unpickle(absl::string_view bytes, const UnpickleOptions& options) {
  Unpickler u(bytes, options);
  return u.Run();
}

}  // namespace vitserve
