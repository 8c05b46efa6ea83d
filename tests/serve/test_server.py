"""One real tritonserver for the module: results, endpoints, bad input, and `serve check`.

Two models, two instances each (each instance a process with its own copy of the predictor):
``tiny`` (6 labels; its predictor takes at most 4 texts, the server's batches up to 8) and
``small`` (3 labels, slow on texts starting with ``slow:``). Everything goes over loopback on
free ports.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from modcompress.cli import serve_main as main
from serve.client import ClientError, ServeClient
from serve.config import INPUT_TEXT, OUTPUT_LABELS, OUTPUT_PROBABILITIES, ServeConfig
from serve.server import free_ports, start_server
from tests.serve.helpers import NgramPredictor, descendants, labels_over, started_in, wait_until

TEXTS = [f"comment {i}: you are {'an idiot' if i % 3 else 'very kind'} and {'stupid' * (i % 4)}"
         for i in range(21)]
MAX_BATCH = 8
MAX_TEXT_BYTES = 1000


@pytest.fixture(scope="module")
def reference() -> dict[str, NgramPredictor]:
    """In-process twins of the served predictors (same seeds, so the same weights)."""
    return {"tiny": NgramPredictor("tiny", seed=0, max_batch_size=4),
            "small": NgramPredictor("small", labels=["a", "b", "c"], seed=1)}


@pytest.fixture(scope="module")
def started_dir(tmp_path_factory):
    """Where ``small``'s instances mark that a slow text reached them (one file per instance pid)."""
    return tmp_path_factory.mktemp("started")


@pytest.fixture(scope="module")
def server(tmp_path_factory, started_dir):
    http_port, grpc_port, metrics_port = free_ports(3)
    config = ServeConfig(
        http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, max_batch_size=MAX_BATCH,
        preferred_batch_sizes=(4, 8), max_queue_delay_us=2000, instances=2, max_text_bytes=MAX_TEXT_BYTES,
        exit_timeout_s=15, log_file=tmp_path_factory.mktemp("triton") / "triton.log",
    )
    tiny = NgramPredictor("tiny", seed=0, max_batch_size=4)  # takes 4 texts at most: the server splits batches of 8
    small = NgramPredictor("small", labels=["a", "b", "c"], seed=1, slow_s=1.0, started_dir=started_dir)
    with start_server([tiny, small], config) as handle:
        yield handle


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, str]:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read().decode("utf-8", "replace")


def _infer_body(data: list, shape: list[int], datatype: str = "BYTES", name: str = INPUT_TEXT) -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}).encode()


def _settled_statistics(url: str, model: str) -> dict:
    """Model statistics once they stop changing (Triton updates them just after responding)."""
    with ServeClient(url, model=model) as client:
        last = client.statistics()
        for _ in range(50):  # bounded: at most ~5 s
            time.sleep(0.1)
            now = client.statistics()
            if now["inference_count"] == last["inference_count"]:
                return now
            last = now
    return last


# -- results ---------------------------------------------------------------------------------

def test_http_predictions_equal_in_process(server, reference):
    with ServeClient(server.http_url, model="tiny") as client:
        probs = client.predict(TEXTS)  # 21 texts: requests of 8, 8, 5
    assert probs.shape == (len(TEXTS), 6) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, reference["tiny"].predict_all(TEXTS), atol=1e-6, rtol=0)


def test_json_and_binary_tensors_give_the_same_answers(server, reference):
    texts = [*TEXTS[:5], "ünïcödé 🙂 text", 'a "quoted" \\ back\nslash']
    expected = reference["tiny"].predict_all(texts)
    for binary in (True, False):
        with ServeClient(server.http_url, model="tiny", binary=binary) as client:
            np.testing.assert_allclose(client.predict(texts), expected, atol=1e-6, rtol=0)
            assert client.predict_labels(texts) == labels_over(expected, reference["tiny"])


def test_model_instances_run_with_sleeping_openmp_workers(server):
    """Spinning OpenMP workers would take the cores the next batch's round trip needs (serve.server)."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        pytest.skip("the environment chose its own OpenMP wait policy, which the server keeps")
    processes = [server.pid, *descendants(server.pid)]  # tritonserver and its 4 stubs (2 models x 2 instances)
    environments = [Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") for pid in processes]
    assert len(processes) >= 5 and all(b"OMP_WAIT_POLICY=PASSIVE" in env for env in environments)


def test_an_openmp_wait_policy_of_the_users_own_is_kept(monkeypatch, tmp_path):
    from serve.server import _triton_env

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert _triton_env(tmp_path)["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    env = _triton_env(tmp_path)
    assert "OMP_WAIT_POLICY" not in env and env["GOMP_SPINCOUNT"] == "1000"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    assert _triton_env(tmp_path)["OMP_WAIT_POLICY"] == "PASSIVE"


def test_without_the_front_triton_itself_answers_and_keeps_its_restricted_endpoints_closed(tmp_path, reference):
    """``start_server(front=False)``: the reference `bench serve-speed --protocols http-direct` measures the front
    against. Triton's own HTTP server is on the port (no front thread, its Server header), same results."""
    http_port, grpc_port, metrics_port = free_ports(3)
    config = ServeConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, max_batch_size=MAX_BATCH,
                         exit_timeout_s=5, log_file=tmp_path / "triton.log")
    fronts = {t for t in threading.enumerate() if t.name.startswith("serve-http")}
    with start_server([NgramPredictor("tiny", seed=0, max_batch_size=4)], config, front=False) as handle:
        assert {t for t in threading.enumerate() if t.name.startswith("serve-http")} == fronts
        with ServeClient(handle.http_url) as client:
            np.testing.assert_allclose(client.predict(TEXTS[:3]), reference["tiny"].predict(TEXTS[:3]), atol=1e-6)
        for path in ("/v2/logging", "/v2/trace/setting", "/v2/systemsharedmemory/status"):
            status, body = _get(http_port, path)
            assert status == 403 and b"restricted" in body.lower(), (path, status, body)
    assert not Path(handle._workdir).exists()


def test_grpc_predictions_equal_in_process(server, reference):
    with ServeClient(server.grpc_url, model="small") as client:
        probs = client.predict(TEXTS)
    np.testing.assert_allclose(probs, reference["small"].predict_all(TEXTS), atol=1e-6, rtol=0)


def test_labels_output_matches_thresholds(server, reference):
    with ServeClient(server.http_url, model="tiny") as client:
        got = client.predict_labels(TEXTS)
    expected = labels_over(reference["tiny"].predict_all(TEXTS), reference["tiny"])
    assert got == expected
    assert any(got) and any(len(row) < 6 for row in got)  # thresholds bite both ways


def test_queued_requests_are_batched_and_stay_correct(server, started_dir, reference):
    """While slow requests hold both instances of ``small``, 16 more queue up; the dynamic batcher
    then runs them in fewer executions, and each answer is still its own text's."""
    texts = TEXTS[:16]
    before = _settled_statistics(server.http_url, "small")
    for path in started_dir.iterdir():
        path.unlink()
    slow = []
    for held in (1, 2):  # one at a time, so each lands on a free instance, not in one batch
        slow.append(threading.Thread(target=lambda: ServeClient(server.http_url, model="small").predict(["slow: hold"])))
        slow[-1].start()
        assert wait_until(lambda held=held: len(started_in(started_dir)) == held, timeout_s=10)
    rows: dict[int, np.ndarray] = {}

    def one(i: int) -> None:
        with ServeClient(server.http_url, model="small") as client:
            rows[i] = client.predict([texts[i]])[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in [*slow, *threads]:
        thread.join(timeout=30)
    np.testing.assert_allclose(np.stack([rows[i] for i in range(len(texts))]),
                               reference["small"].predict_all(texts), atol=1e-6, rtol=0)

    def batched() -> bool:
        with ServeClient(server.http_url, model="small") as client:
            after = client.statistics()
        inferences = after["inference_count"] - before["inference_count"]
        executions = after["execution_count"] - before["execution_count"]
        return inferences == len(texts) + 2 and executions < inferences

    assert wait_until(batched, timeout_s=5)


# -- endpoints served by tritonserver --------------------------------------------------------

def test_health_endpoints(server):
    port = server.config.http_port
    assert _get(port, "/v2/health/live")[0] == 200
    assert _get(port, "/v2/health/ready")[0] == 200
    assert _get(port, "/v2/models/tiny/ready")[0] == 200
    with ServeClient(server.http_url) as client:
        assert client.live() and client.ready()
        assert client.models() == ["small", "tiny"]


def test_model_metadata_and_config(server, reference):
    status, body = _get(server.config.http_port, "/v2/models/tiny")
    assert status == 200
    metadata = json.loads(body)
    assert metadata["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]} == {
        OUTPUT_PROBABILITIES: ("FP32", [-1, 6]), OUTPUT_LABELS: ("BYTES", [-1, 1])}

    status, body = _get(server.config.http_port, "/v2/models/tiny/config")
    config = json.loads(body)
    assert json.loads(config["parameters"]["labels"]["string_value"]) == reference["tiny"].labels
    np.testing.assert_allclose(json.loads(config["parameters"]["thresholds"]["string_value"]),
                               reference["tiny"].thresholds, atol=1e-7)
    assert config["max_batch_size"] == MAX_BATCH
    assert config["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
    assert sum(group["count"] for group in config["instance_group"]) == 2

    with ServeClient(server.grpc_url, model="tiny") as client:  # the same through gRPC
        assert client.labels() == reference["tiny"].labels
        np.testing.assert_allclose(client.thresholds(), reference["tiny"].thresholds, atol=1e-7)


def test_statistics_endpoint_counts_inferences(server):
    with ServeClient(server.http_url, model="small") as client:
        before = client.statistics()["inference_count"]
        client.predict(TEXTS[:5])
        assert wait_until(lambda: client.statistics()["inference_count"] >= before + 5, timeout_s=5)
    status, body = _get(server.config.http_port, "/v2/models/small/stats")
    assert status == 200 and json.loads(body)["model_stats"][0]["name"] == "small"


def test_prometheus_metrics(server):
    with ServeClient(server.http_url, model="tiny") as client:
        client.predict(TEXTS[:2])
    status, body = _get(server.config.metrics_port, "/metrics")
    text = body.decode()
    assert status == 200
    assert "# TYPE nv_inference_request_success counter" in text
    success = [line for line in text.splitlines() if line.startswith('nv_inference_request_success{model="tiny"')]
    assert success and float(success[0].rsplit(" ", 1)[1]) > 0
    assert 'nv_inference_queue_duration_us{model="small"' in text


# -- bad input -------------------------------------------------------------------------------

BAD_REQUESTS = {
    # name: (model, body, status, words in the message)
    "wrong datatype": ("tiny", _infer_body([1.0], [1, 1], "FP32"), 400, "data-type"),
    "wrong shape": ("tiny", _infer_body(["a", "b"], [1, 2]), 400, "shape"),
    "no batch dimension": ("tiny", _infer_body(["a", "b"], [2]), 400, "shape"),
    "empty batch": ("tiny", _infer_body([], [0, 1]), 400, "tiny"),
    "empty string": ("tiny", _infer_body([""], [1, 1]), 400, "text 0 of 1 is empty"),
    "whitespace only among good texts": ("tiny", _infer_body(["fine", "  \t", "ok"], [3, 1]), 400, "text 1 of 3"),
    "non-UTF-8 bytes": ("tiny", b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":["\xff\xfe"]}]}',
                        400, "UTF-8"),
    "text over the byte limit": ("small", _infer_body(["x" * (MAX_TEXT_BYTES + 1)], [1, 1]), 400, "limit"),
    "batch over the maximum": ("tiny", _infer_body(["a"] * (MAX_BATCH + 1), [MAX_BATCH + 1, 1]), 400, "batch-size"),
    "unknown model": ("nope", _infer_body(["a"], [1, 1]), 404, "unknown model"),
    "wrong input name": ("tiny", _infer_body(["a"], [1, 1], name="TEXTS"), 400, "TEXTS"),
    "missing input": ("tiny", b'{"inputs": []}', 400, "TEXT"),
    "unknown output": ("tiny", json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1],
                                                       "data": ["a"]}], "outputs": [{"name": "NOPE"}]}).encode(),
                       400, "NOPE"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_4xx_with_one_line(server, case):
    model, body, status, words = BAD_REQUESTS[case]
    conn = http.client.HTTPConnection("127.0.0.1", server.config.http_port, timeout=10)
    try:
        got, text = _post(conn, f"/v2/models/{model}/infer", body)
    finally:
        conn.close()
    message = json.loads(text)["error"]
    assert got == status, text
    assert words.lower() in message.lower()
    assert "\n" not in message and "Traceback" not in message


def test_non_utf8_binary_tensor_gets_400(server):
    """The binary tensor extension (what tritonclient sends) carries raw bytes: still a 400."""
    with httpclient.InferenceServerClient(server.http_url.removeprefix("http://")) as client:
        tensor = httpclient.InferInput(INPUT_TEXT, [2, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[b"ok"], [b"\xc3\x28 broken"]], dtype=np.object_))
        with pytest.raises(InferenceServerException) as info:
            client.infer("tiny", [tensor])
    assert info.value.status() == "400"
    assert "text 1 of 2 is not valid UTF-8" in info.value.message()


def test_grpc_bad_request_is_invalid_argument(server):
    with grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://")) as client:
        tensor = grpcclient.InferInput(INPUT_TEXT, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[b" "]], dtype=np.object_))
        with pytest.raises(InferenceServerException) as info:
            client.infer("tiny", [tensor])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "empty" in info.value.message()


def test_client_errors_are_one_line_user_errors(server):
    with ServeClient(server.http_url, model="tiny") as client:
        with pytest.raises(ClientError) as info:
            client.predict(["fine", ""])
    assert info.value.status == "400" and "\n" not in str(info.value)
    with ServeClient(server.http_url, model="nope") as client:
        with pytest.raises(ClientError) as info:
            client.labels()
    assert info.value.status == "404"
    with ServeClient(server.http_url) as client, pytest.raises(ClientError, match="serves 2 models"):
        client.predict(["x"])


def test_broken_model_gets_500_with_one_line_and_keeps_serving(server, reference):
    with ServeClient(server.http_url, model="tiny") as client:
        with pytest.raises(ClientError) as info:
            client.predict(["boom: the predictor raises"])
        assert info.value.status == "500"
        assert "model tiny failed: RuntimeError: boom" in str(info.value) and "Traceback" not in str(info.value)
        np.testing.assert_allclose(client.predict(TEXTS[:3]), reference["tiny"].predict_all(TEXTS[:3]), atol=1e-6)


def test_1000_malformed_requests_then_good_results(server, reference):
    """A bounded flood of bad requests, with good ones interleaved (and so co-batched)."""
    malformed = [body for model, body, status, _ in BAD_REQUESTS.values() if model == "tiny"]
    good_texts = TEXTS[:3]
    expected = reference["tiny"].predict_all(good_texts)
    good_results: list[np.ndarray] = []
    done = threading.Event()

    def send_good() -> None:
        with ServeClient(server.http_url, model="tiny") as client:
            for _ in range(300):  # bounded
                if done.is_set():
                    break
                good_results.append(client.predict(good_texts))

    worker = threading.Thread(target=send_good)
    worker.start()
    statuses = []
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", server.config.http_port, timeout=10)
    try:
        for i in range(1000):
            status, _ = _post(conn, "/v2/models/tiny/infer", malformed[i % len(malformed)])
            statuses.append(status)
    finally:
        conn.close()
        done.set()
        worker.join(timeout=60)
    elapsed = time.monotonic() - start

    assert not worker.is_alive()
    assert all(400 <= s < 500 for s in statuses), sorted(set(statuses))
    assert good_results, "no good request completed during the flood"
    for probs in good_results:
        np.testing.assert_allclose(probs, expected, atol=1e-6, rtol=0)
    with ServeClient(server.http_url, model="tiny") as client:
        assert client.ready()
        np.testing.assert_allclose(client.predict(TEXTS), reference["tiny"].predict_all(TEXTS), atol=1e-6, rtol=0)
    assert elapsed < 60


# -- serve check -----------------------------------------------------------------------------

def test_cli_check_prints_labels_and_probabilities(server, reference, capsys):
    text = "you are an idiot"
    assert main(["check", server.http_url, "--text", text, "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    probs = reference["tiny"].predict([text])[0]
    assert "tiny at http://127.0.0.1" in out
    for name, p in zip(reference["tiny"].labels, probs, strict=True):
        assert f"{name}={p:.4f}" in out

    assert main(["check", server.grpc_url, "--text", text, "--text", "thanks", "--model", "small", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    got = np.array([list(r["probabilities"].values()) for r in report["results"]])
    np.testing.assert_allclose(got, reference["small"].predict([text, "thanks"]), atol=1e-6, rtol=0)
    assert [r["labels"] for r in report["results"]] == labels_over(got, reference["small"])


def test_cli_check_errors_are_one_line_exit_2(server, capsys):
    assert main(["check", server.http_url, "--text", "hello"]) == 2  # two models, none named
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "serves 2 models" in err[0] and "--model" in err[0]

    assert main(["check", server.http_url, "--text", " ", "--model", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty" in err[0]
