"""Serving: request parsing without Ray, then one real Ray Serve deployment answering HTTP on localhost."""

import json
import socket
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from glimr_cv.deploy.serving import RequestError, jsonable, parse_request

SINGLE = ("single", {"x": ((4,), "float32")})
NAMED = ("dict", {"a": ((3,), "float32"), "b": ((1,), "float32")})


def _refused(body, kind_inputs=SINGLE, max_rows=5):
    with pytest.raises(RequestError) as info:
        parse_request(body if isinstance(body, bytes) else json.dumps(body).encode(), *kind_inputs, max_rows)
    return info.value


def test_parse_request_accepts_rows_of_the_input_shape():
    x = parse_request(b'{"instances": [[1, 2, 3, 4], [5, 6, 7, 8.5]]}', *SINGLE, 5)
    assert x.dtype == np.float32 and x.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8.5]]


def test_parse_request_accepts_named_inputs_as_rows_or_columns():
    rows = parse_request(b'{"instances": [{"a": [1, 2, 3], "b": [4]}, {"b": [8], "a": [5, 6, 7]}]}', *NAMED, 5)
    cols = parse_request(b'{"instances": {"a": [[1, 2, 3], [5, 6, 7]], "b": [[4], [8]]}}', *NAMED, 5)
    for x in (rows, cols):
        assert x["a"].tolist() == [[1, 2, 3], [5, 6, 7]] and x["b"].tolist() == [[4], [8]]


@pytest.mark.parametrize("body, words", [
    (b"{not json", ["not valid JSON", '{"instances": [[<4 numbers>], ...]}']),
    (b"\xff\xfe", ["not valid JSON"]),
    ([[1, 2, 3, 4]], ["JSON object"]),
    ({"inputs": [[1, 2, 3, 4]]}, ["exactly the key 'instances'", "['inputs']"]),
    ({"instances": [[1, 2, 3, 4]], "extra": 1}, ["exactly the key 'instances'"]),
    ({"instances": [[1, 2, 3]]}, ["rows of shape (4,)", "1 row of shape (3,)"]),
    ({"instances": [1, 2, 3, 4]}, ["rows of shape (4,)", "4 rows of shape ()"]),
    ({"instances": [[1, 2, 3, 4], [1, 2]]}, ["differ in length"]),
    ({"instances": [["a", "b", "c", "d"]]}, ["expected numbers"]),
    ({"instances": [[1, None, 3, 4]]}, ["expected numbers"]),
    ({"instances": []}, ["at least one row"]),
    ({"instances": {"x": [[1, 2, 3, 4]]}}, ["a list of rows", "dict"]),
])
def test_parse_request_refuses_malformed_requests_with_400_naming_what_was_expected(body, words):
    err = _refused(body)
    assert err.status == 400
    for word in words:
        assert word in err.message


def test_parse_request_refuses_wrong_named_inputs_with_400():
    assert "expected the inputs ['a', 'b']" in _refused({"instances": [{"a": [1, 2, 3]}]}, NAMED).message
    assert "expected the inputs ['a', 'b']" in _refused({"instances": {"a": [[1, 2, 3]], "c": [[1]]}}, NAMED).message
    assert "rows of named inputs" in _refused({"instances": [[1, 2, 3, 4]]}, NAMED).message
    assert "same number of rows" in _refused({"instances": {"a": [[1, 2, 3]], "b": [[1], [2]]}}, NAMED).message


def test_parse_request_refuses_too_many_rows_with_413():
    err = _refused({"instances": [[0, 0, 0, 0]] * 6})
    assert err.status == 413 and "at most 5 rows" in err.message
    assert _refused({"instances": [{"a": [1, 2, 3], "b": [1]}] * 6}, NAMED).status == 413


def test_jsonable_turns_non_finite_values_into_null():
    assert jsonable(np.array([[1.0, np.nan], [np.inf, 2.0]])) == [[1.0, None], [None, 2.0]]
    assert jsonable({"a": np.array([1, 2])}) == {"a": [1, 2]}


def test_serve_without_ray_serve_names_the_extra(monkeypatch, tmp_path):
    from glimr_cv import serve

    import ray

    monkeypatch.setitem(sys.modules, "ray.serve", None)
    monkeypatch.delattr(ray, "serve", raising=False)  # imported earlier in this session, it is an attribute too
    with pytest.raises(ImportError, match=r"pip install 'glimr_cv\[serve\]'"):
        serve(str(tmp_path / "model.keras"))


# ---------------------------------------------------------------------------
# one real deployment
# ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body, timeout=60):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.slow
def test_served_model_answers_like_model_predict_and_refuses_bad_requests(ray_local, tmp_path):
    import keras
    from ray import serve as ray_serve

    from glimr_cv import serve

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    model = keras.Model(inputs, {"digit": keras.layers.Dense(3, activation="softmax", name="digit")(hidden),
                                 "parity": keras.layers.Dense(1, activation="sigmoid", name="parity")(hidden)})
    path = str(tmp_path / "model.keras")
    model.save(path)
    port = _free_port()
    try:
        url = serve(path, port=port, route_prefix="/m", max_batch_rows=50, max_body_bytes=20_000)
        assert url == f"http://127.0.0.1:{port}/m"
        with urllib.request.urlopen(url, timeout=60) as response:  # GET describes the request
            assert '"instances"' in json.loads(response.read())["request"]

        x = np.random.default_rng(0).random((7, 8)).astype("float32")
        status, answer = _post(url, {"instances": x.tolist()})
        assert status == 200, answer
        expected = model.predict(x, verbose=0)
        for task in ("digit", "parity"):
            np.testing.assert_allclose(np.array(answer["predictions"][task]), expected[task], rtol=1e-5, atol=1e-6)

        for bad, words in ((b"{oops", "not valid JSON"), ({"rows": x.tolist()}, "exactly the key 'instances'"),
                           ({"instances": x[:, :5].tolist()}, "rows of shape (8,)"),
                           ({"instances": [["a"] * 8]}, "expected numbers")):
            status, answer = _post(url, bad)
            assert status == 400 and words in answer["error"], (bad, status, answer)
        status, answer = _post(url, {"instances": x[:2].tolist()})  # still serving
        assert status == 200 and len(answer["predictions"]["digit"]) == 2

        status, answer = _post(url, {"instances": [[0] * 8] * 60})  # 60 rows > 50, ~1 kB
        assert status == 413 and "at most 50 rows" in answer["error"]
        padded = b'{"instances": ' + b" " * 25_000 + json.dumps(x[:2].tolist()).encode() + b"}"  # 2 rows, 25 kB
        status, answer = _post(url, padded)
        assert status == 413 and "at most 20000 bytes" in answer["error"]
        status, _ = _post(url, {"instances": x[:1].tolist()})
        assert status == 200
    finally:
        ray_serve.shutdown()
