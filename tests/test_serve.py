"""Serving: request parsing without Ray, then one real Ray Serve deployment answering HTTP on localhost."""

import json
import socket
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from glimr_cv.deploy.serving import RequestError, jsonable, max_depth, parse_request, scan_json

SINGLE = ("single", {"x": ((4,), "float32")})
NAMED = ("dict", {"a": ((3,), "float32"), "b": ((1,), "float32")})
BAGS = ("dict", {"instances": ((None, 3), "float32"), "mask": ((None,), "bool")})


def _refused(body, kind_inputs=SINGLE, max_rows=5, allow_nan=False):
    with pytest.raises(RequestError) as info:
        parse_request(body if isinstance(body, bytes) else json.dumps(body).encode(), *kind_inputs, max_rows,
                      allow_nan)
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


def test_parse_request_pads_and_masks_bags_of_tiles_for_a_bag_model():
    x = parse_request(b'{"instances": [{"instances": [[1, 2, 3], [4, 5, 6]]}, {"instances": [[7, 8, 9]]}]}', *BAGS, 5)
    np.testing.assert_array_equal(x["instances"], [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [0, 0, 0]]])
    np.testing.assert_array_equal(x["mask"], [[True, True], [True, False]])
    assert x["instances"].dtype == np.float32 and x["mask"].dtype == bool
    example = '{"instances": [{"instances": [[<3 numbers>], ...]}, ...]}'
    wide = _refused({"instances": [{"instances": [[1, 2, 3]]}, {"instances": [[1, 2, 3, 4]]}]}, BAGS)
    assert wide.status == 400 and wide.message == (f"instances[1]['instances']: expected a list of rows of shape (3,), "
                                                   f"as in {example}, but got 1 row of shape (4,)")
    empty = _refused({"instances": [{"instances": [[1, 2, 3]]}, {"instances": []}]}, BAGS)
    assert empty.message == f"instances[1]['instances']: expected a bag of at least one tile, as in {example}, but got none"
    nan = _refused(b'{"instances": [{"instances": [[1, 2, 3], [4, NaN, 6]]}]}', BAGS)
    assert nan.message.startswith("instances[0]['instances'][1][1]: expected a finite number")
    assert _refused({"instances": [{"instances": [[1, 2, 3]]}] * 6}, BAGS).status == 413
    # a client that pads and masks itself still sends both inputs, as for any model with named inputs
    padded = parse_request(b'{"instances": [{"instances": [[1, 2, 3], [0, 0, 0]], "mask": [1, 0]}]}', *BAGS, 5)
    np.testing.assert_array_equal(padded["mask"], [[True, False]])


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
# hostile requests, without Ray: nesting, non-finite and non-numeric values
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("body, depth, bool_or_null", [
    (b'{"instances": [[1, 2.5e-3, -4]]}', 3, False),
    (b"[" * 100_000, 100_000, False),
    (b'{"a[[[{{": "]]]", "b": [[1]]}', 3, False),  # brackets in strings do not count
    (b'{"k\\"[[[[": [1]}', 2, False),  # an escaped quote does not end the string
    (b'{"k\\\\": [[[1]]]}', 4, False),  # an escaped backslash does not escape the quote after it
    (b'{"k\\\\\\"[[": [1]}', 2, False),  # three backslashes: the quote is escaped again
    (b'[1, true]', 1, True), (b'[false]', 1, True), (b'[[null]]', 2, True),
    (b'[NaN, Infinity, -Infinity, 1e400]', 1, False),  # non-finite numbers: left to the finite check
    (b'{"true": "null"}', 1, False),  # letters in strings are not literals
    (b"", 0, False),
])
def test_scan_json_measures_nesting_and_finds_literals_without_parsing(body, depth, bool_or_null):
    assert scan_json(body) == (depth, bool_or_null)


def test_max_depth_is_the_deepest_valid_request_plus_a_margin():
    assert max_depth(*SINGLE) == 2 + 1 + 2  # {"instances": [[...]]}: 3 levels, 2 more allowed
    assert max_depth(*NAMED) == 3 + 1 + 2  # {"instances": [{"a": [...]}]}: 4 levels
    assert max_depth("single", {"x": ((28, 28, 1), "float32")}) == 2 + 3 + 2
    assert max_depth("unknown", {}) == 32


def test_deep_nesting_is_refused_with_400_naming_the_limit_before_parsing(monkeypatch):
    from glimr_cv.deploy import serving

    def no_parse(*_):
        raise AssertionError("parsed")

    monkeypatch.setattr(serving.json, "loads", no_parse)
    for body in (b"[" * 100_000, b'{"instances": ' + b"[" * 100_000 + b"1" + b"]" * 100_000 + b"}",
                 b'{"instances": [[[[[[1]]]]]]}'):
        err = _refused(body)
        assert err.status == 400 and "expected JSON nested at most 5 levels deep" in err.message
        assert f"but it is nested {scan_json(body)[0]} levels deep" in err.message
    monkeypatch.undo()
    # within the limit, a row nested too deep gets the message on row shapes
    assert "rows of shape (4,)" in _refused(b'{"instances": [[[[1]]]]}').message


@pytest.mark.parametrize("body, where, words", [
    (b'{"instances": [[1, 2, NaN, 4]]}', "instances[0][2]", ["expected a finite number", "got NaN", "allow_nan=True"]),
    (b'{"instances": [[1, 2, 3, 4], [1, 1e400, 3, 4]]}', "instances[1][1]", ["got Infinity", "1e400"]),
    (b'{"instances": [[1, 2, 3, 4], [-Infinity, 0, 3, 4], [Infinity, 0, 0, 0]]}', "instances[1][0]",
     ["got -Infinity", "2 rows hold such values: [1, 2]"]),
    (b'{"instances": [[1, 2, 3, true]]}', "instances[0][3]", ["expected numbers", "got true"]),
    (b'{"instances": [[1, 2, 3, 4], [false, 2, 3, 4]]}', "instances[1][0]", ["got false"]),
    (b'{"instances": [[1, null, 3, 4]]}', "instances[0][1]", ["got null", "missing values"]),
    (b'{"instances": [[1, 2, "3", 4]]}', "instances[0][2]", ['got "3"']),
    (b'{"instances": [[1, 2, 3, 1e39]]}', "instances[0][3]", ["within float32's range", "got 1e+39"]),
    (b'{"instances": [[1, 2, 3, 1' + b"0" * 400 + b']]}', "instances[0][3]", ["an integer of 401 digits"]),
    (b'{"instances": [[1, 2, 3, 4], [1, 2]]}', "instances[1] has shape (2,), instances[0] has (4,)",
     ["differ in length"]),
])
def test_values_that_are_not_finite_numbers_get_400_naming_where_and_what(body, where, words):
    err = _refused(body)
    assert err.status == 400 and where in err.message, err.message
    for word in words:
        assert word in err.message, err.message


def test_named_inputs_are_located_by_row_and_input_name():
    rows = b'{"instances": [{"a": [1, 2, 3], "b": [4]}, {"a": [1, 2, NaN], "b": [4]}]}'
    assert _refused(rows, NAMED).message.startswith("instances[1]['a'][2]: expected a finite number")
    cols = b'{"instances": {"a": [[1, 2, 3], [4, 5, 6]], "b": [[1], [true]]}}'
    assert _refused(cols, NAMED).message.startswith("instances['b'][1][0]: expected numbers")


def test_large_integers_within_float_range_are_numbers():
    x = parse_request(b'{"instances": [[1, 2, 3, 100000000000000000000]]}', *SINGLE, 5)
    assert x.dtype == np.float32 and x[0, 3] == np.float32(1e20)


def test_allow_nan_accepts_nan_and_null_as_missing_values_but_never_infinities_or_bools():
    x = parse_request(b'{"instances": [[1, NaN, 3, null]]}', *SINGLE, 5, True)
    assert x.dtype == np.float32 and np.isnan(x[0, [1, 3]]).all() and x[0, 0] == 1
    named = parse_request(b'{"instances": [{"a": [NaN, 2, 3], "b": [null]}]}', *NAMED, 5, True)
    assert np.isnan(named["a"][0, 0]) and np.isnan(named["b"][0, 0])
    assert "expected a finite number or NaN" in _refused(b'{"instances": [[1, 2, 3, Infinity]]}',
                                                          allow_nan=True).message
    assert "got true" in _refused(b'{"instances": [[1, 2, 3, true]]}', allow_nan=True).message
    ints = ("single", {"ids": ((2,), "int32")})
    assert "expected an integer (the input is int32)" in _refused(b'{"instances": [[1, NaN]]}', ints,
                                                                   allow_nan=True).message


def test_serve_refuses_a_corrupt_model_file_before_starting_anything(tmp_path):
    pytest.importorskip("ray.serve")
    from glimr_cv import serve

    path = tmp_path / "corrupt.keras"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"model_path: cannot read .*corrupt\.keras as a Keras model \(not a zip"):
        serve(str(path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        serve(str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match="ray_bind: expected one of 'loopback', 'all'"):
        serve(_tiny_keras(tmp_path), ray_bind="everywhere")


def _tiny_keras(tmp_path) -> str:
    """A file that passes the cheap .keras check (a zip with a config.json); it is never loaded."""
    import zipfile

    path = str(tmp_path / "tiny.keras")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    return path


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


@pytest.fixture(scope="module")
def endpoint(ray_local, tmp_path_factory):
    """One Serve instance on one port, three applications: ``/m`` (one input of 8, two outputs, small limits),
    ``/named`` (named inputs a: 3, b: 1) and ``/nan`` (the same, served with ``allow_nan=True``)."""
    import keras
    from ray import serve as ray_serve

    from glimr_cv import serve

    root = tmp_path_factory.mktemp("serve")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    multi = keras.Model(inputs, {"digit": keras.layers.Dense(3, activation="softmax", name="digit")(hidden),
                                 "parity": keras.layers.Dense(1, activation="sigmoid", name="parity")(hidden)})
    a, b = keras.Input((3,), name="a"), keras.Input((1,), name="b")
    named = keras.Model({"a": a, "b": b}, keras.layers.Dense(2, name="y")(keras.layers.Concatenate()([a, b])))
    multi.save(str(root / "multi.keras"))
    named.save(str(root / "named.keras"))
    import e2e_helpers as h

    bags = h.bag_model_file(root, 3)  # attention MIL: served from a fresh replica, which must find its layer
    port = _free_port()
    try:  # num_cpus=0: four replicas on the one CPU of the test Ray
        urls = {
            "/m": serve(str(root / "multi.keras"), port=port, route_prefix="/m", name="multi", max_batch_rows=50,
                        max_body_bytes=20_000, num_cpus=0),
            "/named": serve(str(root / "named.keras"), port=port, route_prefix="/named", name="named", num_cpus=0),
            "/nan": serve(str(root / "named.keras"), port=port, route_prefix="/nan", name="nan", num_cpus=0,
                          allow_nan=True),
            "/bags": serve(bags, port=port, route_prefix="/bags", name="bags", num_cpus=0),
        }
        yield {"port": port, "urls": urls, "multi": multi, "named": named, "bags": bags}
    finally:
        ray_serve.shutdown()


def _get(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


GOOD_NAMED = {"instances": [{"a": [0.1, 0.2, 0.3], "b": [1.0]}, {"a": [1, 2, 3], "b": [0]}]}


@pytest.mark.slow
def test_served_model_answers_like_model_predict_and_refuses_bad_requests(endpoint):
    model, port = endpoint["multi"], endpoint["port"]
    url = endpoint["urls"]["/m"]
    assert url == f"http://127.0.0.1:{port}/m"
    assert '"instances"' in _get(url)["request"]  # GET describes the request

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


@pytest.mark.slow
def test_served_endpoint_refuses_non_finite_and_non_numeric_values_and_keeps_serving(endpoint):
    url = endpoint["urls"]["/named"]
    assert _get(url)["allow_nan"] is False
    for body, words in (
            (b'{"instances": [{"a": [1, NaN, 3], "b": [1]}]}', "instances[0]['a'][1]: expected a finite number"),
            (b'{"instances": [{"a": [1, 2, 3], "b": [1]}, {"a": [1, 2, 3], "b": [1e400]}]}',
             "instances[1]['b'][0]: expected a finite number"),
            (b'{"instances": [{"a": [1, 2, true], "b": [1]}]}', "instances[0]['a'][2]: expected numbers"),
            (b'{"instances": {"a": [[1, 2, 3]], "b": [[null]]}}', "instances['b'][0][0]: expected numbers"),
            (b'{"instances": {"a": [[1, 2, 3], [4, 5, 6]], "b": [[1], [2], [3]]}}', "same number of rows")):
        status, answer = _post(url, body)
        assert status == 400 and words in answer["error"], (body, status, answer)
        status, answer = _post(url, GOOD_NAMED)  # still serving after every bad request
        assert status == 200 and len(answer["predictions"]) == 2, answer


@pytest.mark.slow
def test_served_endpoint_refuses_deep_nesting_with_400_naming_the_limit(endpoint):
    url = endpoint["urls"]["/named"]
    limit = _get(url)["max_depth"]
    assert limit == 6
    for body in (b"[" * 100_000, b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        status, answer = _post(url, body)
        assert status == 400, answer
        assert f"expected JSON nested at most {limit} levels deep" in answer["error"], answer
        assert f"but it is nested {scan_json(body)[0]} levels deep" in answer["error"], answer
        status, answer = _post(url, GOOD_NAMED)
        assert status == 200, answer


@pytest.mark.slow
def test_endpoint_served_with_allow_nan_predicts_rows_holding_nan(endpoint):
    url = endpoint["urls"]["/nan"]
    assert _get(url)["allow_nan"] is True
    status, answer = _post(url, b'{"instances": [{"a": [1, NaN, 3], "b": [null]}, {"a": [1, 2, 3], "b": [0]}]}')
    assert status == 200, answer
    expected = endpoint["named"].predict({"a": np.array([[1, np.nan, 3], [1, 2, 3]], "float32"),
                                          "b": np.array([[np.nan], [0]], "float32")}, verbose=0)
    assert answer["predictions"][0] == [None, None]  # NaN predictions come back as null
    np.testing.assert_allclose(answer["predictions"][1], expected[1], rtol=1e-5, atol=1e-6)
    status, answer = _post(url, b'{"instances": [{"a": [1, Infinity, 3], "b": [0]}]}')
    assert status == 400 and "expected a finite number or NaN" in answer["error"], answer
    status, _ = _post(url, GOOD_NAMED)
    assert status == 200


@pytest.mark.slow
def test_a_served_bag_model_takes_bags_of_tiles_of_any_lengths(endpoint):
    from glimr_cv.mil import predict_bags

    url = endpoint["urls"]["/bags"]
    assert _get(url)["request"] == '{"instances": [{"instances": [[<3 numbers>], ...]}, ...]}'
    rng = np.random.default_rng(0)
    bags = [rng.random((n, 3)).astype("float32") for n in (5, 1, 12)]
    status, answer = _post(url, {"instances": [{"instances": b.tolist()} for b in bags]})
    assert status == 200, answer
    np.testing.assert_allclose(np.asarray(answer["predictions"]), predict_bags(endpoint["bags"], bags), rtol=1e-5)
    status, answer = _post(url, {"instances": [{"instances": [[1, 2]]}]})
    assert status == 400 and answer["error"].startswith("instances[0]['instances']: expected a list of rows of shape (3,)")
