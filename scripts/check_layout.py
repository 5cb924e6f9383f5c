#!/usr/bin/env python3
"""Layout rules of server/ and client/ (issue #21), checked from the source text.

Rules:
  cycle           the folder dependency graph (from #include "server/..." / "client/..."
                  lines) has no cycle; a violation is one strongly connected set of folders.
  grpc-header     no gRPC header (<grpcpp/...>, <grpc++/...>, <grpc/...>, *.grpc.pb.h) in
                  server/ outside server/rpc/ and server/main.cc (client/ is a gRPC client
                  and exempt).
  torch-header    no LibTorch header (<torch/...>, <ATen/...>, <c10/...>) reached from a file
                  in server/rpc/, server/serving/ or server/scheduler/, directly or through
                  the project headers it includes.
  file-length     no source file (.cc, .h) over 600 lines.
  function-length no function over 80 lines (first line of the signature to the closing
                  brace; a brace-matching heuristic).

Current violations are listed, each with its reason, in scripts/layout_allowlist.txt; a
violation not listed fails, and so does a listed one that no longer occurs (remove the
line: the list only shrinks).

  scripts/check_layout.py            check; exit 1 on a new violation or a stale entry
  scripts/check_layout.py --report   print every current violation (listed or not)
"""

import argparse
import os
import re
import sys

SCANNED_TOPS = ("server", "client")
SOURCE_SUFFIXES = (".cc", ".h")
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
GRPC_ALLOWED = ("server/rpc/", "server/main.cc", "client/")
TORCH_FREE_DIRS = ("server/rpc/", "server/serving/", "server/scheduler/")

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
GRPC_RE = re.compile(r"^(grpcpp/|grpc\+\+/|grpc/)|\.grpc\.pb\.h$")
TORCH_RE = re.compile(r"^(torch/|ATen/|c10/)")


def source_files(root):
    out = []
    for top in SCANNED_TOPS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(SOURCE_SUFFIXES):
                    out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def read_lines(root, rel):
    with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
        return f.read().split("\n")


def includes(lines):
    """(line number, quoted?, path) of every #include."""
    out = []
    for i, line in enumerate(lines, 1):
        m = INCLUDE_RE.match(line)
        if m:
            out.append((i, m.group(1) == '"', m.group(2)))
    return out


def is_project_path(path):
    return path.split("/", 1)[0] in SCANNED_TOPS


# ---- cycles ---------------------------------------------------------------------------


def folder_graph(files, incs):
    """{folder: {folder: [(file, line, header)]}} from project #include lines."""
    graph = {}
    for f in files:
        src = os.path.dirname(f)
        graph.setdefault(src, {})
        for line, quoted, path in incs[f]:
            if not quoted or not is_project_path(path):
                continue
            dst = os.path.dirname(path)
            if dst != src:
                graph[src].setdefault(dst, []).append((f, line, path))
                graph.setdefault(dst, {})
    return graph


def strongly_connected(graph):
    """Tarjan's algorithm (iterative); returns the components with more than one node."""
    index, low, on_stack, stack, comps, counter = {}, {}, set(), [], [], [0]

    def visit(start):
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    n = stack.pop()
                    on_stack.discard(n)
                    comp.append(n)
                    if n == node:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return comps


def cycle_violations(graph):
    out = []
    for comp in strongly_connected(graph):
        members = set(comp)
        edges = []
        for a in comp:
            for b, where in sorted(graph[a].items()):
                if b in members:
                    f, line, path = where[0]
                    edges.append(f"{a} -> {b} ({f}:{line} includes {path})")
        out.append((("cycle", " ".join(comp)), "; ".join(edges)))
    return out


# ---- headers --------------------------------------------------------------------------


def grpc_violations(files, incs):
    out = []
    for f in files:
        if f.startswith(GRPC_ALLOWED):
            continue
        for line, _, path in incs[f]:
            if GRPC_RE.search(path):
                out.append((("grpc-header", f), f"{f}:{line} includes {path}"))
                break
    return out


def torch_reach(f, incs, memo, visiting):
    """The first chain of includes from f to a LibTorch header, or None."""
    if f in memo:
        return memo[f]
    if f in visiting:
        return None
    visiting.add(f)
    found = None
    for _, quoted, path in incs.get(f, []):
        if TORCH_RE.match(path):
            found = [path]
            break
        if quoted and path in incs:
            sub = torch_reach(path, incs, memo, visiting)
            if sub:
                found = [path] + sub
                break
    visiting.discard(f)
    memo[f] = found
    return found


def torch_violations(files, incs):
    out, memo = [], {}
    for f in files:
        if not f.startswith(TORCH_FREE_DIRS):
            continue
        chain = torch_reach(f, incs, memo, set())
        if chain:
            out.append((("torch-header", f), f"{f} -> " + " -> ".join(chain)))
    return out


# ---- lengths --------------------------------------------------------------------------


def strip_code(text):
    """The text with comments, string and char literals blanked (newlines kept) and
    preprocessor lines emptied, so braces can be matched."""
    out, i, n = [], 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and c == "#":
            # preprocessor directive, with continuations
            while i < n and text[i] != "\n":
                if text[i] == "\\" and i + 1 < n and text[i + 1] == "\n":
                    out.append("\n")
                    i += 2
                    continue
                i += 1
            continue
        if c == "\n":
            out.append(c)
            at_line_start = True
            i += 1
            continue
        if c not in " \t":
            at_line_start = False
        if text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
            continue
        m = re.match(r'R"([^(\s]*)\(', text[i:i + 20]) if c == "R" else None
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find(")" + m.group(1) + '"', i)
            j = n if end < 0 else end + len(m.group(1)) + 2
            out.append('""' + "".join(ch for ch in text[i:j] if ch == "\n"))
            i = j
            continue
        if c == '"' or (c == "'" and not (i > 0 and text[i - 1].isalnum())):
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(c + c)
            i = j + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


NAME_BEFORE_PAREN_RE = re.compile(r"((?:[A-Za-z_~][\w]*\s*::\s*)*(?:operator\s*[^\s(]+|~?[A-Za-z_]\w*))\s*(?:<[^()]*>)?\s*\($")
TYPE_SCOPE_RE = re.compile(r"^(template\s*<.*>\s*)?(typedef\s+)?(class|struct|union|enum)\b", re.S)


def function_name(prefix):
    """The (qualified) name before the parameter list of a function signature."""
    depth = 0
    for k, ch in enumerate(prefix):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "(" and depth == 0:
            m = NAME_BEFORE_PAREN_RE.search(prefix[: k + 1])
            if m:
                return re.sub(r"\s+", "", m.group(1))
            return "?"
    return "?"


def functions(text):
    """(name, first line, last line) of every function body outside another function."""
    code = strip_code(text)
    out = []
    # scope stack entries: kind in {"ns", "type", "func", "other"}
    stack = []
    prefix, prefix_line, line = "", None, 1
    func_start = {}
    for ch in code:
        if ch == "\n":
            line += 1
            if prefix:
                prefix += " "
            continue
        in_func = any(kind == "func" for kind, _ in stack)
        if in_func:
            if ch == "{":
                stack.append(("other", None))
            elif ch == "}":
                kind, info = stack.pop()
                if kind == "func":
                    out.append((info[0], info[1], line))
            continue
        if ch == "{":
            p = prefix.strip()
            if re.search(r"\bnamespace\b", p) or re.match(r'^extern\s*""', p):
                stack.append(("ns", None))
                prefix, prefix_line = "", None
            elif TYPE_SCOPE_RE.match(p) and "(" not in p.split("{")[0]:
                stack.append(("type", None))
                prefix, prefix_line = "", None
            elif ")" in p and not re.search(r"(?<![=!<>+\-*/%&|^])=(?!=)", p.split("(")[0]):
                if re.search(r"\)\s*(const\s*)?(noexcept\s*)?(override\s*)?:", p) and re.search(r"[\w>]\s*$", p):
                    # a brace initialiser in a constructor's member-initialiser list
                    stack.append(("init", None))
                    prefix += ch
                else:
                    stack.append(("func", (function_name(p), prefix_line or line)))
                    prefix, prefix_line = "", None
            else:
                stack.append(("other", None))
                prefix += ch
            continue
        if ch == "}":
            if stack:
                kind, _ = stack.pop()
                if kind == "init" or kind == "other":
                    prefix += ch
                else:
                    prefix, prefix_line = "", None
            continue
        if ch == ";" and not (stack and stack[-1][0] in ("other", "init")):
            prefix, prefix_line = "", None
            continue
        if not ch.isspace() and prefix_line is None:
            prefix_line = line
        prefix += ch
    return out


def length_violations(root, files, lines_of):
    out = []
    for f in files:
        lines = lines_of[f]
        n = len(lines) - (1 if lines and lines[-1] == "" else 0)
        if n > MAX_FILE_LINES:
            out.append((("file-length", f), f"{f}: {n} lines (> {MAX_FILE_LINES})"))
        seen = {}
        for name, first, last in functions("\n".join(lines)):
            length = last - first + 1
            if length > MAX_FUNCTION_LINES:
                key = f"{f}:{name}"
                seen[key] = seen.get(key, 0) + 1
                if seen[key] > 1:
                    key += f"#{seen[key]}"
                out.append((("function-length", key),
                            f"{f}:{first}-{last} {name}: {length} lines (> {MAX_FUNCTION_LINES})"))
    return out


# ---- allowlist ------------------------------------------------------------------------


def read_allowlist(path):
    """{(rule, key): reason}; lines are `rule key  # reason`."""
    entries, errors = {}, []
    if not os.path.exists(path):
        return entries, errors
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            body, _, reason = raw.partition("#")
            body = body.strip()
            if not body:
                continue
            parts = body.split(None, 1)
            if len(parts) != 2 or not reason.strip():
                errors.append(f"{path}:{n}: want `rule key  # reason`: {raw.rstrip()}")
                continue
            rule, key = parts[0], " ".join(parts[1].split())
            entries[(rule, key)] = reason.strip()
    return entries, errors


def violations(root):
    files = source_files(root)
    lines_of = {f: read_lines(root, f) for f in files}
    incs = {f: includes(lines_of[f]) for f in files}
    graph = folder_graph(files, incs)
    out = []
    out += cycle_violations(graph)
    out += grpc_violations(files, incs)
    out += torch_violations(files, incs)
    out += length_violations(root, files, lines_of)
    return out, graph


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.path.dirname(here), help="repository root")
    ap.add_argument("--allowlist", default=None, help="default: <root>/scripts/layout_allowlist.txt")
    ap.add_argument("--report", action="store_true", help="print every current violation")
    ap.add_argument("--graph", action="store_true", help="print the folder dependency graph")
    args = ap.parse_args(argv)
    allow_path = args.allowlist or os.path.join(args.root, "scripts", "layout_allowlist.txt")

    found, graph = violations(args.root)
    allowed, errors = read_allowlist(allow_path)

    if args.graph:
        for a in sorted(graph):
            for b in sorted(graph[a]):
                print(f"{a} -> {b}  ({len(graph[a][b])} includes)")
    if args.report:
        for (rule, key), detail in found:
            mark = "allowed" if (rule, key) in allowed else "NEW"
            print(f"[{mark}] {rule} {key}\n    {detail}")
        print(f"{len(found)} violations, {sum(1 for k, _ in found if k in allowed)} in the allowlist")

    found_keys = {k for k, _ in found}
    new = [(k, d) for k, d in found if k not in allowed]
    stale = [k for k in allowed if k not in found_keys]
    for e in errors:
        print(f"error: {e}")
    for (rule, key), detail in new:
        print(f"error: new {rule} violation: {detail}\n  (fix it, or list `{rule} {key}  # why` in {allow_path})")
    for rule, key in stale:
        print(f"error: allowlist entry no longer violated, remove it from {allow_path}: {rule} {key}")
    if errors or new or stale:
        return 1
    if not args.report:
        print(f"layout rules hold ({len(found)} allowlisted violations left)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
