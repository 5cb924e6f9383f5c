#include "server/checkpoint/unpickler.h"

#include <array>
#include <cstring>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vitserve {
namespace {

using Kind = PickleValue::Kind;

// Pickle opcodes (CPython Lib/pickle.py names).
enum Opcode : uint8_t {
  kMark = '(',
  kStop = '.',
  kPop = '0',
  kPopMark = '1',
  kDup = '2',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kBinInt2 = 'M',
  kNone = 'N',
  kBinPersId = 'Q',
  kReduce = 'R',
  kBinString = 'T',
  kShortBinString = 'U',
  kBinUnicode = 'X',
  kAppend = 'a',
  kBuild = 'b',
  kGlobal = 'c',
  kDict = 'd',
  kEmptyDict = '}',
  kAppends = 'e',
  kBinGet = 'h',
  kLongBinGet = 'j',
  kList = 'l',
  kEmptyList = ']',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kSetItem = 's',
  kTuple = 't',
  kEmptyTuple = ')',
  kSetItems = 'u',
  kBinFloat = 'G',
  // Protocol 2.
  kProto = 0x80,
  kNewObj = 0x81,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kLong4 = 0x8b,
  // Protocol 3.
  kBinBytes = 'B',
  kShortBinBytes = 'C',
  // Protocol 4.
  kShortBinUnicode = 0x8c,
  kStackGlobal = 0x93,
  kMemoize = 0x94,
  kFrame = 0x95,
};

// Cycle checks may visit this many container slots per input byte in total.
constexpr size_t kVisitBudgetPerByte = 16;

// Highest pickle protocol understood (only the opcodes above, though).
constexpr int kMaxProtocol = 5;

constexpr absl::string_view kOrderedDict = "collections.OrderedDict";
constexpr absl::string_view kRebuildTensorV2 = "torch._utils._rebuild_tensor_v2";
constexpr absl::string_view kRebuildParameter = "torch._utils._rebuild_parameter";
constexpr absl::string_view kRebuildParameterWithState =
    "torch._utils._rebuild_parameter_with_state";
constexpr absl::string_view kNamespace = "argparse.Namespace";

constexpr std::array<absl::string_view, 8> kStorageTypes = {"Float", "Half", "BFloat16", "Double",
                                                            "Long",  "Int",  "Bool",     "Byte"};

bool IsStorageGlobal(absl::string_view name, std::string* type) {
  for (const absl::string_view t : kStorageTypes) {
    if (name == absl::StrCat("torch.", t, "Storage")) {
      if (type != nullptr) *type = std::string(t);
      return true;
    }
  }
  return false;
}

bool IsAllowedGlobal(absl::string_view name) {
  return name == kOrderedDict || name == kRebuildTensorV2 || name == kRebuildParameter ||
         name == kRebuildParameterWithState || name == kNamespace || IsStorageGlobal(name, nullptr);
}

PickleValuePtr Make(Kind kind) {
  auto v = std::make_shared<PickleValue>();
  v->kind = kind;
  return v;
}

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
    if (!IsAllowedGlobal(full)) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint refers to forbidden global '", full,
                       "'; only state-dict types are allowed (byte ", op_pos_, " of the pickle)"));
    }
    PickleValuePtr g = Make(Kind::kGlobal);
    g->str = full;
    return Push(std::move(g));
  }

  static bool AsInt(const PickleValue& v, int64_t* out) {
    if (v.kind == Kind::kInt) {
      *out = v.integer;
      return true;
    }
    return false;
  }

  absl::Status IntTuple(const PickleValue& v, absl::string_view what, std::vector<int64_t>* out) {
    if (v.kind != Kind::kTuple) return Error(absl::StrCat(what, " is not a tuple"));
    for (const PickleValuePtr& item : v.items) {
      int64_t x;
      if (!AsInt(*item, &x)) return Error(absl::StrCat(what, " holds a non-integer"));
      out->push_back(x);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<PickleValuePtr> RebuildTensor(const PickleValue& args) {
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if (args.items.size() < 4) return Error("_rebuild_tensor_v2 with too few arguments");
    const PickleValue& storage = *args.items[0];
    if (storage.kind != Kind::kStorage) {
      return Error("_rebuild_tensor_v2: first argument is not a storage");
    }
    PickleValuePtr t = Make(Kind::kTensor);
    t->tensor.storage = storage.storage;
    if (!AsInt(*args.items[1], &t->tensor.storage_offset) || t->tensor.storage_offset < 0) {
      return Error("_rebuild_tensor_v2: bad storage offset");
    }
    if (absl::Status s = IntTuple(*args.items[2], "tensor size", &t->tensor.shape); !s.ok()) {
      return s;
    }
    if (absl::Status s = IntTuple(*args.items[3], "tensor stride", &t->tensor.stride); !s.ok()) {
      return s;
    }
    if (t->tensor.shape.size() != t->tensor.stride.size()) {
      return Error("_rebuild_tensor_v2: size and stride differ in length");
    }
    if (args.items.size() > 4 && args.items[4]->kind == Kind::kBool) {
      t->tensor.requires_grad = args.items[4]->boolean;
    }
    return t;
  }

  absl::Status Reduce() {
    absl::StatusOr<PickleValuePtr> args = Pop();
    if (!args.ok()) return args.status();
    absl::StatusOr<PickleValuePtr> callable = Pop();
    if (!callable.ok()) return callable.status();
    if ((*callable)->kind != Kind::kGlobal) return Error("REDUCE on something not callable");
    if ((*args)->kind != Kind::kTuple) return Error("REDUCE arguments are not a tuple");
    const std::string& name = (*callable)->str;
    const std::vector<PickleValuePtr>& a = (*args)->items;
    if (name == kOrderedDict) {
      if (!a.empty()) return Error("OrderedDict called with arguments");
      return Push(Make(Kind::kDict));
    }
    if (name == kNamespace) {
      if (!a.empty()) return Error("Namespace called with arguments");
      PickleValuePtr obj = Make(Kind::kObject);
      obj->str = name;
      return Push(std::move(obj));
    }
    if (name == kRebuildTensorV2) {
      absl::StatusOr<PickleValuePtr> t = RebuildTensor(**args);
      if (!t.ok()) return t.status();
      return Push(*std::move(t));
    }
    if (name == kRebuildParameter || name == kRebuildParameterWithState) {
      // (data, requires_grad, backward_hooks[, state])
      if (a.empty() || a[0]->kind != Kind::kTensor) {
        return Error(absl::StrCat(name, ": first argument is not a tensor"));
      }
      return Push(a[0]);
    }
    return Error(absl::StrCat("'", name, "' cannot be called"));
  }

  absl::Status NewObj() {
    absl::StatusOr<PickleValuePtr> args = Pop();
    if (!args.ok()) return args.status();
    absl::StatusOr<PickleValuePtr> cls = Pop();
    if (!cls.ok()) return cls.status();
    if ((*cls)->kind != Kind::kGlobal || (*args)->kind != Kind::kTuple || !(*args)->items.empty()) {
      return Error("NEWOBJ needs a class and an empty argument tuple");
    }
    if ((*cls)->str == kOrderedDict) return Push(Make(Kind::kDict));
    if ((*cls)->str == kNamespace) {
      PickleValuePtr obj = Make(Kind::kObject);
      obj->str = (*cls)->str;
      return Push(std::move(obj));
    }
    return Error(absl::StrCat("'", (*cls)->str, "' cannot be instantiated"));
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

  absl::Status PersistentId() {
    absl::StatusOr<PickleValuePtr> pid = Pop();
    if (!pid.ok()) return pid.status();
    // ('storage', torch.<Type>Storage, key, location, numel)
    const PickleValue& p = **pid;
    if (p.kind != Kind::kTuple || p.items.size() != 5 || p.items[0]->kind != Kind::kString ||
        p.items[0]->str != "storage" || p.items[1]->kind != Kind::kGlobal ||
        p.items[2]->kind != Kind::kString || p.items[3]->kind != Kind::kString ||
        p.items[4]->kind != Kind::kInt) {
      return Error("persistent id is not ('storage', type, key, location, numel)");
    }
    PickleValuePtr s = Make(Kind::kStorage);
    if (!IsStorageGlobal(p.items[1]->str, &s->storage.type)) {
      return Error(absl::StrCat("persistent id names '", p.items[1]->str, "', not a storage type"));
    }
    s->storage.key = p.items[2]->str;
    s->storage.location = p.items[3]->str;
    s->storage.numel = p.items[4]->integer;
    if (s->storage.numel < 0) return Error("negative storage size");
    return Push(std::move(s));
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
        absl::StatusOr<PickleValuePtr> value = Pop();
        if (!value.ok()) return value.status();
        absl::StatusOr<PickleValuePtr> key = Pop();
        if (!key.ok()) return key.status();
        absl::StatusOr<PickleValuePtr> d = Top();
        if (!d.ok()) return d.status();
        return SetItem(*d, *std::move(key), *std::move(value));
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
      case kBinPut: {
        absl::StatusOr<uint64_t> i = ReadLE(1);
        if (!i.ok()) return i.status();
        return Put(*i);
      }
      case kLongBinPut: {
        absl::StatusOr<uint64_t> i = ReadLE(4);
        if (!i.ok()) return i.status();
        return Put(*i);
      }
      case kMemoize:
        return Put(memo_.size());
      case kBinGet: {
        absl::StatusOr<uint64_t> i = ReadLE(1);
        if (!i.ok()) return i.status();
        return Get(*i);
      }
      case kLongBinGet: {
        absl::StatusOr<uint64_t> i = ReadLE(4);
        if (!i.ok()) return i.status();
        return Get(*i);
      }
      case kGlobal: {
        absl::StatusOr<std::string> module = ReadLine();
        if (!module.ok()) return module.status();
        absl::StatusOr<std::string> name = ReadLine();
        if (!name.ok()) return name.status();
        return PushGlobal(*module, *name);
      }
      case kStackGlobal: {
        absl::StatusOr<PickleValuePtr> name = Pop();
        if (!name.ok()) return name.status();
        absl::StatusOr<PickleValuePtr> module = Pop();
        if (!module.ok()) return module.status();
        if ((*name)->kind != Kind::kString || (*module)->kind != Kind::kString) {
          return Error("STACK_GLOBAL operands are not strings");
        }
        return PushGlobal((*module)->str, (*name)->str);
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

PickleValue::~PickleValue() {
  // shared_ptr's destructor would recurse once per nesting level (TUPLE1 nests one level
  // per input byte). Instead, children are moved out, and a child whose last owner is this
  // loop is emptied the same way before it dies, so each destructor frees a leaf.
  std::vector<PickleValuePtr> pending;
  const auto detach_children = [&pending](PickleValue& v) {
    for (PickleValuePtr& c : v.items) {
      if (c != nullptr) pending.push_back(std::move(c));
    }
    v.items.clear();
    for (auto& [k, val] : v.entries) {
      if (k != nullptr) pending.push_back(std::move(k));
      if (val != nullptr) pending.push_back(std::move(val));
    }
    v.entries.clear();
  };
  detach_children(*this);
  while (!pending.empty()) {
    PickleValuePtr v = std::move(pending.back());
    pending.pop_back();
    if (v.use_count() == 1) detach_children(*v);
  }
}

const PickleValue* PickleValue::Find(absl::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k->kind == Kind::kString && k->str == key) return v.get();
  }
  return nullptr;
}

absl::string_view PickleValue::KindName() const {
  switch (kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
    case Kind::kBigInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kGlobal:
      return "global";
    case Kind::kObject:
      return "object";
    case Kind::kStorage:
      return "storage";
    case Kind::kTensor:
      return "tensor";
  }
  return "?";
}

absl::StatusOr<PickleValuePtr> Unpickle(absl::string_view bytes, const UnpickleOptions& options) {
  Unpickler u(bytes, options);
  return u.Run();
}

}  // namespace vitserve
