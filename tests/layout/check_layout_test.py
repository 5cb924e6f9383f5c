#!/usr/bin/env python3
"""scripts/check_layout.py on small made-up trees: each rule must fail on a violation that
is not in the allowlist, pass once it is listed, and fail on a stale allowlist line."""

import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts",
                      "check_layout.py")


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def check(root, allow="", report=False):
    write(root, "scripts/layout_allowlist.txt", allow)
    args = [sys.executable, SCRIPT, "--root", root] + (["--report"] if report else [])
    r = subprocess.run(args, capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


class CheckLayoutTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        write(self.root, "server/spec/spec.h", "#pragma once\nstruct Spec {};\n")
        write(self.root, "server/model/model.h", '#include "server/spec/spec.h"\n')
        write(self.root, "server/rpc/service.cc",
              '#include <grpcpp/grpcpp.h>\n#include "server/model/model.h"\n')

    def tearDown(self):
        self.tmp.cleanup()

    def test_clean_tree_passes(self):
        rc, out = check(self.root)
        self.assertEqual(rc, 0, out)

    def test_cycle_fails_until_listed(self):
        write(self.root, "server/spec/uses_model.h", '#include "server/model/model.h"\n')
        rc, out = check(self.root)
        self.assertEqual(rc, 1, out)
        self.assertIn("new cycle violation", out)
        self.assertIn("server/spec/uses_model.h:1", out)
        rc, out = check(self.root, "cycle server/model server/spec  # test\n")
        self.assertEqual(rc, 0, out)

    def test_stale_allowlist_line_fails(self):
        rc, out = check(self.root, "cycle server/model server/spec  # fixed long ago\n")
        self.assertEqual(rc, 1, out)
        self.assertIn("no longer violated", out)

    def test_allowlist_line_needs_reason(self):
        write(self.root, "server/spec/uses_model.h", '#include "server/model/model.h"\n')
        rc, out = check(self.root, "cycle server/model server/spec\n")
        self.assertEqual(rc, 1, out)

    def test_grpc_outside_rpc_fails_client_exempt(self):
        write(self.root, "client/cmd.cc", "#include <grpcpp/grpcpp.h>\n")
        self.assertEqual(check(self.root)[0], 0)
        write(self.root, "server/model/stub.h", '#include "vitserve/v1/inference.grpc.pb.h"\n')
        rc, out = check(self.root)
        self.assertEqual(rc, 1, out)
        self.assertIn("grpc-header server/model/stub.h", out)

    def test_torch_reached_through_a_header_fails(self):
        write(self.root, "server/model/model.h", '#include <torch/torch.h>\n')
        write(self.root, "server/scheduler/queue.h", '#include "server/model/model.h"\n')
        rc, out = check(self.root)
        self.assertEqual(rc, 1, out)
        self.assertIn("server/scheduler/queue.h -> server/model/model.h -> torch/torch.h", out)
        # rpc/service.cc reaches it too
        self.assertIn("torch-header server/rpc/service.cc", out)

    def test_long_file_fails(self):
        write(self.root, "server/model/big.cc", "int x;\n" * 601)
        rc, out = check(self.root)
        self.assertEqual(rc, 1, out)
        self.assertIn("file-length server/model/big.cc", out)
        write(self.root, "server/model/big.cc", "int x;\n" * 600)
        self.assertEqual(check(self.root)[0], 0)

    def test_long_function_fails_with_its_name(self):
        body = "  int a = 0;  // { not a brace\n  const char* s = \"}\";\n" * 40
        text = ("namespace n {\nnamespace {\nstruct S { int f() { return 1; } };\n}\n"
                "Foo::Foo(int x) : a_{x}, b_(x) {\n" + body + "}\n}  // namespace n\n")
        write(self.root, "server/model/f.cc", text)  # 1 + 80 + 1 = 82 lines
        rc, out = check(self.root)
        self.assertEqual(rc, 1, out)
        self.assertIn("function-length server/model/f.cc:Foo::Foo", out)
        self.assertIn("82 lines", out)
        rc, out = check(self.root, "function-length server/model/f.cc:Foo::Foo  # opcode switch\n")
        self.assertEqual(rc, 0, out)
        write(self.root, "server/model/f.cc", text.replace(body, body[: body.index("\n") + 1] * 78))
        self.assertEqual(check(self.root)[0], 0)

    def test_report_lists_allowed_and_new(self):
        write(self.root, "server/model/big.cc", "int x;\n" * 601)
        write(self.root, "server/model/stub.h", "#include <grpcpp/grpcpp.h>\n")
        rc, out = check(self.root, "file-length server/model/big.cc  # test\n", report=True)
        self.assertEqual(rc, 1, out)
        self.assertIn("[allowed] file-length server/model/big.cc", out)
        self.assertIn("[NEW] grpc-header server/model/stub.h", out)


if __name__ == "__main__":
    unittest.main()
