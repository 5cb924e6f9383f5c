// One table of an enum's names that serves both directions: value -> name (EnumName), name
// -> value (FindEnumByName, ParseEnumName) and the "accepted: ..." list of a parse error
// (EnumNameList), so the names are written once. Several values may share a name (the first
// listed wins when parsing). Header-only; no state.
#ifndef VITSERVE_SERVER_UTIL_ENUM_NAMES_H_
#define VITSERVE_SERVER_UTIL_ENUM_NAMES_H_

#include <cstddef>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace vitserve {

template <typename E>
struct EnumNameEntry {
  E value;
  absl::string_view name;
};

// The name of `value`, or `unknown` when the table does not list it.
template <typename E, size_t N>
constexpr absl::string_view EnumName(const EnumNameEntry<E> (&table)[N], E value,
                                     absl::string_view unknown) {
  for (const EnumNameEntry<E>& e : table) {
    if (e.value == value) return e.name;
  }
  return unknown;
}

// The first value named exactly `name` (case-sensitive), or nullopt.
template <typename E, size_t N>
constexpr std::optional<E> FindEnumByName(const EnumNameEntry<E> (&table)[N],
                                          absl::string_view name) {
  for (const EnumNameEntry<E>& e : table) {
    if (e.name == name) return e.value;
  }
  return std::nullopt;
}

// "a, b, c": the table's names in order.
template <typename E, size_t N>
std::string EnumNameList(const EnumNameEntry<E> (&table)[N]) {
  std::string out;
  for (const EnumNameEntry<E>& e : table) {
    if (!out.empty()) out += ", ";
    out.append(e.name.data(), e.name.size());
  }
  return out;
}

// FindEnumByName, or INVALID_ARGUMENT "<what> '<name>'; accepted: <EnumNameList>".
template <typename E, size_t N>
absl::StatusOr<E> ParseEnumName(const EnumNameEntry<E> (&table)[N], absl::string_view name,
                                absl::string_view what) {
  if (std::optional<E> found = FindEnumByName(table, name)) return *found;
  return absl::InvalidArgumentError(
      absl::StrCat(what, " '", name, "'; accepted: ", EnumNameList(table)));
}

}  // namespace vitserve

#endif  // VITSERVE_SERVER_UTIL_ENUM_NAMES_H_
