#!/usr/bin/python3
"""The Open Inference Protocol (KServe v2) end to end: the real vitserve binary on loopback,
driven by an independent client: Python grpcio stubs generated at test time from
proto/inference/*.proto (protoc + grpc_python_plugin), and plain urllib for REST.

    oip_test.py --repo_root=DIR --vitserve=BIN [unittest args]
    oip_test.py --repo_root=DIR --proto_only       # the proto-drift check alone

Each result is compared with the native API (vitserve.v1.InferenceService.Classify, its
stubs generated the same way) on the same images, so the protocol layer must carry the
native answers and errors unchanged. The proto check compares our proto's package,
service, methods and every message / field / enum number with the published numbers in
oip_proto_numbers.json (generated from Triton's and KServe's published protos).
"""

import argparse
import base64
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.error
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "observability"))
import model_repo  # noqa: E402

ARGS = None
TMP = None
SERVER = {}  # proc, grpc_port, http_port
PB = {}      # generated modules
MODEL = "tiny_evit"
N_CLASSES = model_repo.NUM_CLASSES
SIDE = model_repo.IMAGE_SIZE


def compile_protos(repo_root, out_dir):
    proto_dir = os.path.join(repo_root, "proto")
    subprocess.run(["protoc", f"--proto_path={proto_dir}", f"--python_out={out_dir}",
                    f"--grpc_python_out={out_dir}",
                    "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                    "inference/grpc_service.proto", "inference/model_config.proto",
                    "vitserve/v1/inference.proto"], check=True)
    subprocess.run(["protoc", f"--proto_path={proto_dir}", "--include_imports",
                    f"--descriptor_set_out={os.path.join(out_dir, 'oip.pb')}",
                    "inference/grpc_service.proto"], check=True)
    sys.path.insert(0, out_dir)


def proto_tables(descriptor_set_path):
    from google.protobuf import descriptor_pb2
    fds = descriptor_pb2.FileDescriptorSet()
    with open(descriptor_set_path, "rb") as f:
        fds.ParseFromString(f.read())
    msgs, enums, services = {}, {}, {}

    def walk(prefix, m):
        name = prefix + m.name
        msgs[name] = {f.name: f.number for f in m.field}
        for n in m.nested_type:
            if not n.options.map_entry:
                walk(name + ".", n)
        for e in m.enum_type:
            enums[name + "." + e.name] = {v.name: v.number for v in e.value}

    for f in fds.file:
        for m in f.message_type:
            walk(f.package + ".", m)
        for e in f.enum_type:
            enums[f.package + "." + e.name] = {v.name: v.number for v in e.value}
        for s in f.service:
            services[f.package + "." + s.name] = {
                m.name: [m.input_type.lstrip("."), m.output_type.lstrip("."),
                         m.client_streaming, m.server_streaming] for m in s.method}
    return {"messages": msgs, "enums": enums, "services": services}


class ProtoNumbersTest(unittest.TestCase):
    def test_proto_matches_published_numbers(self):
        with open(os.path.join(HERE, "oip_proto_numbers.json")) as f:
            published = json.load(f)
        ours = proto_tables(os.path.join(TMP, "oip.pb"))
        self.assertIn("inference.GRPCInferenceService", ours["services"])
        for kind in ("messages", "enums", "services"):
            self.assertEqual(ours[kind], published[kind], f"{kind} drifted from the published proto")
        for rpc in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                    "ModelInfer", "ModelStreamInfer", "ModelConfig", "ModelStatistics"):
            self.assertIn(rpc, ours["services"]["inference.GRPCInferenceService"])


def start_server():
    models = os.path.join(TMP, "models")
    model_repo.write_repository(models)
    log = open(os.path.join(TMP, "vitserve.log"), "w")
    proc = subprocess.Popen(
        [ARGS.vitserve, f"--model_repository={models}", "--host=127.0.0.1", "--port=0",
         "--http_port=0", "--metrics_port=-1", "--scheduler=fixed", "--threads=1",
         "--max_queue_delay_ms=2", "--http_max_body_bytes=200000", f"--default_model={MODEL}"],
        stdout=subprocess.PIPE, stderr=log, text=True)
    SERVER["proc"] = proc
    ports = {}
    timer = threading.Timer(120, proc.kill)
    timer.start()
    for line in proc.stdout:
        m = re.match(r"vitserve (listening|http) on (\S+):(\d+)\s*$", line)
        if m:
            ports[m.group(1)] = int(m.group(3))
        if len(ports) == 2:
            break
    timer.cancel()
    if len(ports) != 2:
        raise RuntimeError("vitserve did not print its ports; see " + log.name)
    SERVER["grpc_port"], SERVER["http_port"] = ports["listening"], ports["http"]


def stop_server():
    proc = SERVER.get("proc")
    if proc is None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def png(seed):
    from PIL import Image
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def tensor(seed, n=1):
    return np.random.default_rng(seed).normal(size=(n, 3, SIDE, SIDE)).astype(np.float32)


def raw_bytes(elements):
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def decode_raw_bytes(raw):
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        out.append(raw[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


class OipServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import grpc
        cls.grpc = grpc
        from inference import grpc_service_pb2, grpc_service_pb2_grpc
        from vitserve.v1 import inference_pb2, inference_pb2_grpc
        cls.pb, cls.native_pb = grpc_service_pb2, inference_pb2
        channel = grpc.insecure_channel(f"127.0.0.1:{SERVER['grpc_port']}")
        cls.oip = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        cls.native = inference_pb2_grpc.InferenceServiceStub(channel)
        cls.http = f"http://127.0.0.1:{SERVER['http_port']}"

    # ---- helpers ----------------------------------------------------------------------
    def image_request(self, images, shape=None, raw=False, **params):
        r = self.pb.ModelInferRequest(model_name=MODEL, id="req-7")
        inp = r.inputs.add(name="image", datatype="BYTES")
        inp.shape.extend(shape or [len(images)])
        if raw:
            r.raw_input_contents.append(raw_bytes(images))
        else:
            inp.contents.bytes_contents.extend(images)
        self.set_params(r, params)
        return r

    def tensor_request(self, array, raw=True, **params):
        r = self.pb.ModelInferRequest(model_name=MODEL)
        inp = r.inputs.add(name="tensor", datatype="FP32")
        inp.shape.extend(array.shape)
        if raw:
            r.raw_input_contents.append(array.astype("<f4").tobytes())
        else:
            inp.contents.fp32_contents.extend(array.ravel().tolist())
        self.set_params(r, params)
        return r

    @staticmethod
    def set_params(r, params):
        for k, v in params.items():
            if isinstance(v, float):
                r.parameters[k].double_param = v
            elif isinstance(v, int):
                r.parameters[k].int64_param = v
            else:
                r.parameters[k].string_param = v

    def native_logits(self, keep_rate=0.0, image=None, array=None, top_k=0):
        req = self.native_pb.ClassifyRequest(model=MODEL, keep_rate=keep_rate, return_logits=True,
                                             top_k=top_k)
        if image is not None:
            req.image = image
        else:
            req.tensor.shape.extend(array.shape)
            req.tensor.data.extend(array.ravel().tolist())
        return self.native.Classify(req, timeout=30)

    def logits_of(self, response, index=0):
        out = response.outputs[index]
        self.assertEqual(out.datatype, "FP32")
        return np.frombuffer(response.raw_output_contents[index], dtype="<f4").reshape(out.shape)

    def assert_invalid(self, request, *fragments, code=None):
        code = code or self.grpc.StatusCode.INVALID_ARGUMENT
        with self.assertRaises(self.grpc.RpcError) as ctx:
            self.oip.ModelInfer(request, timeout=30)
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        for f in fragments:
            self.assertIn(f, ctx.exception.details())
        return ctx.exception.details()

    # ---- metadata RPCs ----------------------------------------------------------------
    def test_health_and_metadata(self):
        self.assertTrue(self.oip.ServerLive(self.pb.ServerLiveRequest()).live)
        self.assertTrue(self.oip.ServerReady(self.pb.ServerReadyRequest()).ready)
        self.assertTrue(self.oip.ModelReady(self.pb.ModelReadyRequest(name=MODEL)).ready)
        self.assertTrue(self.oip.ModelReady(self.pb.ModelReadyRequest(name=MODEL, version="1")).ready)
        with self.assertRaises(self.grpc.RpcError) as ctx:
            self.oip.ModelReady(self.pb.ModelReadyRequest(name="nope"))
        self.assertEqual(ctx.exception.code(), self.grpc.StatusCode.NOT_FOUND)
        meta = self.oip.ServerMetadata(self.pb.ServerMetadataRequest())
        self.assertEqual(meta.name, "vitserve")
        self.assertEqual(sorted(meta.extensions),
                         ["binary_tensor_data", "classification", "model_configuration",
                          "parameters", "statistics"])
        mm = self.oip.ModelMetadata(self.pb.ModelMetadataRequest(name=MODEL))
        self.assertEqual((mm.name, list(mm.versions), mm.platform), (MODEL, ["1"], "vitserve"))
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in mm.inputs],
                         [("image", "BYTES", [-1]), ("tensor", "FP32", [-1, 3, SIDE, SIDE])])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in mm.outputs],
                         [("logits", "FP32", [-1, N_CLASSES])])
        with self.assertRaises(self.grpc.RpcError) as ctx:
            self.oip.ModelMetadata(self.pb.ModelMetadataRequest(name=MODEL, version="9"))
        self.assertEqual(ctx.exception.code(), self.grpc.StatusCode.NOT_FOUND)
        self.assertIn("served version: '1'", ctx.exception.details())

    def test_model_config(self):
        from inference import model_config_pb2
        c = self.oip.ModelConfig(self.pb.ModelConfigRequest(name=MODEL)).config
        self.assertEqual((c.name, c.platform, c.backend, c.max_batch_size),
                         (MODEL, "vitserve", "vitserve", 8))
        self.assertEqual([(i.name, i.data_type, list(i.dims)) for i in c.input],
                         [("image", model_config_pb2.TYPE_STRING, [1]),
                          ("tensor", model_config_pb2.TYPE_FP32, [3, SIDE, SIDE])])
        self.assertEqual([(o.name, o.data_type, list(o.dims)) for o in c.output],
                         [("logits", model_config_pb2.TYPE_FP32, [N_CLASSES])])
        self.assertTrue(c.HasField("dynamic_batching"))
        self.assertEqual(c.dynamic_batching.max_queue_delay_microseconds, 2000)
        self.assertEqual(c.dynamic_batching.priority_levels, 4)

    def test_statistics_count_answered_images(self):
        def count():
            stats = self.oip.ModelStatistics(self.pb.ModelStatisticsRequest(name=MODEL))
            self.assertEqual(stats.model_stats[0].name, MODEL)
            return stats.model_stats[0]
        before = count()
        self.oip.ModelInfer(self.image_request([png(1), png(2)]), timeout=30)
        after = count()
        self.assertEqual(after.inference_count - before.inference_count, 2)
        self.assertEqual(after.inference_stats.success.count - before.inference_stats.success.count, 1)
        self.assertGreater(after.inference_stats.compute_infer.ns, before.inference_stats.compute_infer.ns)
        self.assertGreater(after.last_inference, 0)
        everything = self.oip.ModelStatistics(self.pb.ModelStatisticsRequest())
        self.assertEqual(sorted(s.name for s in everything.model_stats), ["tiny_dense", MODEL])

    # ---- inference --------------------------------------------------------------------
    def test_bytes_input_n_images_match_native(self):
        images = [png(10), png(11), png(12)]
        for shape, raw in (([3], False), ([3, 1], True)):
            resp = self.oip.ModelInfer(self.image_request(images, shape=shape, raw=raw,
                                                          vitserve_keep_rate=0.7), timeout=30)
            self.assertEqual((resp.model_name, resp.model_version, resp.id),
                             (MODEL, "1", "req-7"))
            logits = self.logits_of(resp)
            self.assertEqual(logits.shape, (3, N_CLASSES))
            for i, img in enumerate(images):
                native = self.native_logits(keep_rate=0.7, image=img)
                np.testing.assert_allclose(logits[i], native.logits, rtol=1e-4, atol=1e-4)

    def test_fp32_input_raw_and_typed_match_native(self):
        array = tensor(5, n=2)
        for raw in (True, False):
            resp = self.oip.ModelInfer(self.tensor_request(array, raw=raw), timeout=30)
            logits = self.logits_of(resp)
            self.assertEqual(logits.shape, (2, N_CLASSES))
            for i in range(2):
                native = self.native_logits(array=array[i])
                np.testing.assert_allclose(logits[i], native.logits, rtol=1e-4, atol=1e-4)

    def test_classification_extension(self):
        r = self.image_request([png(20), png(21)])
        out = r.outputs.add(name="logits")
        out.parameters["classification"].int64_param = 3
        r.outputs.add(name="logits")
        resp = self.oip.ModelInfer(r, timeout=30)
        self.assertEqual(resp.outputs[0].datatype, "BYTES")
        self.assertEqual(list(resp.outputs[0].shape), [2, 3])
        classes = decode_raw_bytes(resp.raw_output_contents[0])
        self.assertEqual(len(classes), 6)
        self.assertEqual(self.logits_of(resp, 1).shape, (2, N_CLASSES))
        native = self.native_logits(image=png(21), top_k=3)
        for j, p in enumerate(native.predictions):
            score, index, label = classes[3 + j].decode().split(":")
            self.assertEqual((int(index), label), (p.class_index, p.label))
            self.assertAlmostEqual(float(score), p.score, places=5)

    def test_parameters_both_directions(self):
        resp = self.oip.ModelInfer(self.image_request(
            [png(30), png(31)], vitserve_keep_rate=0.5, vitserve_latency_budget_ms=60000,
            vitserve_min_keep_rate=0.25, vitserve_min_expected_accuracy=0.5, priority=2,
            timeout=60_000_000), timeout=30)
        p = {k: v.string_param for k, v in resp.parameters.items()}
        native = self.native_logits(keep_rate=0.5, image=png(30))
        self.assertEqual(p["vitserve_keep_rate"], "0.5,0.5")
        tokens = ",".join(str(t) for t in native.tokens_per_stage)
        self.assertEqual(p["vitserve_tokens_per_stage"], f"{tokens};{tokens}")
        self.assertEqual(p["vitserve_macs"], f"{native.macs},{native.macs}")
        self.assertEqual(p["vitserve_dense_macs"], f"{native.dense_macs},{native.dense_macs}")
        self.assertLess(native.macs, native.dense_macs)
        self.assertAlmostEqual(float(p["vitserve_expected_accuracy"].split(",")[0]),
                               native.expected_accuracy, places=5)
        for key in ("vitserve_queue_seconds", "vitserve_compute_seconds"):
            self.assertTrue(all(float(v) >= 0 for v in p[key].split(",")), p[key])
        self.assertTrue(all(1 <= int(b) <= 8 for b in p["vitserve_batch_size"].split(",")))

    def test_triton_timeout_is_a_deadline(self):
        self.assert_invalid(self.image_request([png(1)], timeout=1), "deadline",
                            code=self.grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_errors_name_what_is_accepted(self):
        wrong_type = self.image_request([png(1)])
        wrong_type.inputs[0].datatype = "UINT8"
        self.assert_invalid(wrong_type, "datatype 'UINT8'", "accepted: one input")
        self.assert_invalid(self.image_request([png(1)], shape=[1, 2]), "shape [1,2]")
        self.assert_invalid(self.tensor_request(tensor(1)[:, :, :8, :8]), "tensor")  # preprocessor
        mixed = self.tensor_request(tensor(1), raw=False)
        mixed.raw_input_contents.append(tensor(1).tobytes())
        self.assert_invalid(mixed, "mixes raw_input_contents and typed contents")
        self.assert_invalid(self.image_request([png(1)], keep_rate=0.5),
                            "unknown request parameter 'keep_rate'", "vitserve_keep_rate")
        bad_output = self.image_request([png(1)])
        bad_output.outputs.add(name="probs")
        self.assert_invalid(bad_output, "the only output is 'logits'")

    def test_errors_match_native(self):
        def native_error(**kw):
            req = self.native_pb.ClassifyRequest(**kw)
            with self.assertRaises(self.grpc.RpcError) as ctx:
                self.native.Classify(req, timeout=30)
            return ctx.exception.code(), ctx.exception.details()

        code, msg = native_error(model="nope", image=png(1))
        r = self.image_request([png(1)])
        r.model_name = "nope"
        self.assertEqual(self.assert_invalid(r, code=code), msg)
        code, msg = native_error(model=MODEL, image=png(1), keep_rate=0.1)
        self.assertEqual(self.assert_invalid(self.image_request([png(1)], vitserve_keep_rate=0.1),
                                             code=code), msg)
        code, msg = native_error(model=MODEL, image=b"not an image")
        self.assertEqual(self.assert_invalid(self.image_request([png(1), b"not an image"]),
                                             code=code), msg)

    def test_stream_infer(self):
        good = [self.image_request([png(40)]), self.image_request([png(41), png(42)])]
        good[0].id, good[1].id = "a", "b"
        bad = self.image_request([png(43)], keep_rate=1.0)
        bad.id = "c"
        responses = list(self.oip.ModelStreamInfer(iter([good[0], bad, good[1]]), timeout=60))
        self.assertEqual(len(responses), 3)
        by_id = {r.infer_response.id: r for r in responses}
        self.assertEqual(sorted(by_id), ["a", "b", "c"])
        self.assertEqual(by_id["a"].error_message, "")
        self.assertEqual(self.logits_of(by_id["b"].infer_response).shape, (2, N_CLASSES))
        self.assertTrue(by_id["c"].error_message.startswith("INVALID_ARGUMENT: unknown request "
                                                            "parameter"), by_id["c"].error_message)

    # ---- REST -------------------------------------------------------------------------
    def rest(self, path, body=None):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.http + path, data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def test_rest_health_and_metadata(self):
        self.assertEqual(self.rest("/v2/health/live"), (200, {"live": True}))
        self.assertEqual(self.rest("/v2/health/ready"), (200, {"ready": True}))
        status, meta = self.rest("/v2")
        self.assertEqual((status, meta["name"]), (200, "vitserve"))
        self.assertIn("classification", meta["extensions"])
        for path in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"):
            status, mm = self.rest(path)
            self.assertEqual(status, 200)
            self.assertEqual(mm["outputs"], [{"name": "logits", "datatype": "FP32",
                                              "shape": [-1, N_CLASSES]}])
        self.assertEqual(self.rest(f"/v2/models/{MODEL}/ready"), (200, {"ready": True}))
        status, err = self.rest("/v2/models/nope/ready")
        self.assertEqual(status, 404)
        self.assertIn("nope", err["error"])
        status, config = self.rest(f"/v2/models/{MODEL}/config")
        self.assertEqual((status, config["max_batch_size"]), (200, 8))
        status, stats = self.rest(f"/v2/models/{MODEL}/stats")
        self.assertEqual((status, stats["model_stats"][0]["name"]), (200, MODEL))

    def test_rest_infer_json_tensors(self):
        array = tensor(50, n=2)
        body = {"id": "r1", "parameters": {"vitserve_keep_rate": 0.7},
                "inputs": [{"name": "tensor", "datatype": "FP32", "shape": list(array.shape),
                            "data": array.tolist()}]}
        status, resp = self.rest(f"/v2/models/{MODEL}/infer", body)
        self.assertEqual(status, 200, resp)
        self.assertEqual((resp["id"], resp["parameters"]["vitserve_keep_rate"]), ("r1", "0.7,0.7"))
        logits = np.array(resp["outputs"][0]["data"], dtype=np.float32).reshape(2, N_CLASSES)
        native = self.native_logits(keep_rate=0.7, array=array[1])
        np.testing.assert_allclose(logits[1], native.logits, rtol=1e-4, atol=1e-4)
        body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                            "data": [{"b64": base64.b64encode(png(51)).decode()}]}],
                "outputs": [{"name": "logits", "parameters": {"classification": 2}}]}
        status, resp = self.rest(f"/v2/models/{MODEL}/versions/1/infer", body)
        self.assertEqual(status, 200, resp)
        self.assertEqual(resp["outputs"][0]["shape"], [1, 2])
        self.assertRegex(resp["outputs"][0]["data"][0], r"^[0-9.e-]+:\d+:class_\d+$")

    def test_rest_binary_tensor_data(self):
        """Triton's binary extension: a raw PNG in, raw FP32 logits and BYTES classes out."""
        img = png(52)
        header = json.dumps({
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "parameters": {"binary_data_size": len(img) + 4}}],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}},
                        {"name": "logits", "parameters": {"classification": 2,
                                                          "binary_data": False}}]}).encode()
        req = urllib.request.Request(
            f"{self.http}/v2/models/{MODEL}/infer", data=header + raw_bytes([img]),
            headers={"Inference-Header-Content-Length": str(len(header)),
                     "Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            n = int(resp.headers["Inference-Header-Content-Length"])
            body = resp.read()
        meta = json.loads(body[:n])
        self.assertEqual(meta["outputs"][0]["parameters"]["binary_data_size"], 4 * N_CLASSES)
        self.assertNotIn("data", meta["outputs"][0])
        self.assertEqual(len(meta["outputs"][1]["data"]), 2)
        logits = np.frombuffer(body[n:], dtype="<f4")
        np.testing.assert_allclose(logits, self.native_logits(image=img).logits, rtol=1e-4,
                                   atol=1e-4)
        status, err = self.rest(f"/v2/models/{MODEL}/infer", header + b"xx")
        self.assertEqual(status, 400)  # no Inference-Header-Content-Length: not JSON

    def test_rest_errors(self):
        status, err = self.rest(f"/v2/models/{MODEL}/infer", b'{"inputs": [')
        self.assertEqual(status, 400)
        self.assertIn("not valid JSON", err["error"])
        status, err = self.rest(f"/v2/models/{MODEL}/infer",
                                {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1],
                                             "data": [1.0]}]})
        self.assertEqual(status, 400)
        self.assertIn("accepted: one input", err["error"])
        status, err = self.rest("/v2/models/nope/infer",
                                {"inputs": [{"name": "tensor", "datatype": "FP32",
                                             "shape": [1, 3, SIDE, SIDE],
                                             "data": tensor(1).ravel().tolist()}]})
        self.assertEqual(status, 404)
        self.assertIn("nope", err["error"])
        status, err = self.rest(f"/v2/models/{MODEL}/infer", b" " * 300000)
        self.assertEqual(status, 413)
        # Refused on a decode thread, after admission: still 400 with the decoder's message.
        status, err = self.rest(f"/v2/models/{MODEL}/infer",
                                {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                             "data": ["not an image"]}]})
        self.assertEqual(status, 400)
        self.assertIn("accepted image formats", err["error"])


def main():
    global ARGS, TMP
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo_root", required=True)
    ap.add_argument("--vitserve", default="")
    ap.add_argument("--proto_only", action="store_true")
    ARGS, rest = ap.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="oip_test_") as tmp:
        TMP = tmp
        compile_protos(ARGS.repo_root, tmp)
        loader = unittest.TestLoader()
        suite = loader.loadTestsFromTestCase(ProtoNumbersTest)
        if not ARGS.proto_only:
            start_server()
            suite.addTests(loader.loadTestsFromTestCase(OipServerTest))
        try:
            result = unittest.TextTestRunner(verbosity=2).run(suite)
        finally:
            stop_server()
            if not ARGS.proto_only and not result.wasSuccessful():
                with open(os.path.join(tmp, "vitserve.log")) as f:
                    sys.stderr.write("--- vitserve.log (tail) ---\n" + f.read()[-3000:])
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
