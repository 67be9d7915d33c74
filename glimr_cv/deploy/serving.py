"""Serving: a ``.keras`` model as a JSON HTTP endpoint on Ray Serve.

``POST {"instances": [[...], ...]}`` (rows of the model's one input) or, for a
model with named inputs, ``{"instances": [{"a": [...], "b": [...]}, ...]}`` (rows)
or ``{"instances": {"a": [[...], ...], "b": [[...], ...]}}`` (columns), answers
``{"predictions": [...]}``: a list of rows for one output, a dict of lists by
output name for several. ``GET`` describes the expected request. A malformed
request gets HTTP 400 and an oversized one 413, both with ``{"error": message}``
naming where the mistake is (``instances[3]['a'][1]``) and what was expected;
the service keeps running. Values must be finite numbers: ``true``, ``null``,
strings, ``NaN``, ``Infinity`` and numbers that overflow (``1e400``, or beyond
float32's range for a float32 input) are refused, except NaN (sent as ``NaN`` or
``null``) on an endpoint served with ``allow_nan=True``. A body nested deeper than
the model's inputs can be (:func:`max_depth`) is refused before it is parsed.

A local Ray that :func:`serve` starts listens on the loopback only
(``ray_bind="loopback"``), like the HTTP endpoint by default.

Ray Serve is the optional ``serve`` extra (``pip install glimr_cv[serve]``),
imported only by :func:`serve` and the deployment.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from ..checks import check_bool, check_choice, check_int, check_number, check_type, expected
from ..keras_io import is_bag_model, shape_fits, shape_text

__all__ = ["serve", "ModelServer", "RequestError", "parse_request", "expected_request", "jsonable", "scan_json",
           "max_depth", "connect_ray"]

INSTANCES = "instances"

#: Levels of JSON nesting allowed beyond the deepest a valid request has (so that a row one level too deep
#: still gets the message on row shapes, not this one).
DEPTH_MARGIN = 2
#: Nesting allowed for a model whose input shapes are unknown (a subclassed model).
UNKNOWN_DEPTH = 32
#: Where a local Ray started by :func:`serve` listens: the loopback only, or Ray's default (every interface).
RAY_BINDS = ("loopback", "all")


class RequestError(Exception):
    """A request the endpoint refuses: ``status`` (400 or 413) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _row_text(shape: tuple) -> str:
    if not shape:
        return "<number>"
    if len(shape) == 1:
        n = shape[0]
        return f"[<{'some' if n is None else n} number{'' if n == 1 else 's'}>]"
    return f"<nested list of shape {shape_text(shape)}>"


def expected_request(kind: str, inputs: dict) -> str:
    """An example of the request body the model takes, for error messages."""
    if is_bag_model(kind, inputs):
        tile = _row_text(inputs["instances"][0][1:])
        return f'{{"{INSTANCES}": [{{"instances": [{tile}, ...]}}, ...]}}'
    if kind in ("dict", "list"):
        row = ", ".join(f'"{n}": {_row_text(s)}' for n, (s, _) in inputs.items())
        return f'{{"{INSTANCES}": [{{{row}}}, ...]}}'
    shape = next(iter(inputs.values()))[0] if inputs else None
    return f'{{"{INSTANCES}": [{_row_text(shape) if shape is not None else "<row>"}, ...]}}'


# -- checks of a request's bytes, before parsing -----------------------------------------------
#: Bytes of numbers and separators, dropped before the scan: what is left is brackets, strings and literals.
#: None of them can follow a backslash in valid JSON, so dropping them keeps every escape next to its backslash.
_NUMBER_BYTES = b"0123456789.,:-+eE \t\r\n"


def scan_json(body: bytes) -> tuple[int, bool]:
    """``(depth, bool_or_null)`` of a JSON text, read from its bytes without parsing it.

    ``depth`` is the deepest nesting of arrays and objects (``[[1]]`` is 2);
    ``bool_or_null`` says whether ``true``, ``false`` or ``null`` occurs. Brackets
    and letters inside strings (escaped quotes included) do not count. Numbers
    are dropped first (``bytes.translate``), the rest is vectorized, so the scan
    costs a few milliseconds per megabyte and never recurses, however deep the
    text; on invalid JSON its answer is meaningless but harmless (parsing
    refuses the text next).
    """
    chars = np.frombuffer(body.translate(None, _NUMBER_BYTES), dtype=np.uint8)
    if not len(chars):
        return 0, False
    quote = chars == ord('"')
    backslash = chars == ord("\\")
    if backslash.any():  # a quote is escaped when an odd run of backslashes ends right before it
        index = np.arange(len(chars))
        follows = np.zeros(len(chars), dtype=bool)  # right after a backslash
        follows[1:] = backslash[:-1]
        first = np.maximum.accumulate(np.where(backslash & ~follows, index, 0))  # first backslash of each run
        odd = np.zeros(len(chars), dtype=bool)
        odd[1:] = backslash[:-1] & ((index[:-1] - first[:-1]) % 2 == 0)  # the run before has odd length
        quote &= ~odd
    outside = ~((np.cumsum(quote) - quote) & 1).astype(bool) & ~quote  # an even number of quotes before it
    step = (outside & ((chars == ord("[")) | (chars == ord("{")))).astype(np.int64)
    step -= outside & ((chars == ord("]")) | (chars == ord("}")))
    depth = int(np.cumsum(step).max(initial=0))
    # u and l: true, false, null (NaN and Infinity have neither); every other letter left is in a string
    return depth, bool((outside & ((chars == ord("u")) | (chars == ord("l")))).any())


def max_depth(kind: str, inputs: dict) -> int:
    """The deepest JSON nesting a request for the model may have.

    A valid request nests ``2 + rank`` levels (``{"instances": [row, ...]}``) or
    ``3 + rank`` for named inputs (``{"instances": [{"a": row}, ...]}``), rank being
    the largest input rank without the batch axis; :data:`DEPTH_MARGIN` more are
    allowed, :data:`UNKNOWN_DEPTH` when the input shapes are unknown.
    """
    if not inputs:
        return UNKNOWN_DEPTH
    rank = max(len(shape) for shape, _ in inputs.values())
    return (3 if kind in ("dict", "list") else 2) + rank + DEPTH_MARGIN


# -- checks of the parsed values --------------------------------------------------------------
def _first(value: list, bad: Callable[[Any], bool], path: tuple = ()) -> tuple | None:
    """``(path, item)`` of the first item of nested lists for which ``bad(item)``; else None."""
    for i, item in enumerate(value):
        if isinstance(item, list):
            found = _first(item, bad, (*path, i))
            if found is not None:
                return found
        elif bad(item):
            return (*path, i), item
    return None


def _json_text(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _at(where: Callable[[int], str], index: Any) -> str:
    """``instances[3]['a'][1]``: the row's name, then the indices within the row."""
    index = tuple(int(i) for i in index)
    return where(index[0]) + "".join(f"[{i}]" for i in index[1:])


def _rows_text(rows: np.ndarray, most: int = 10) -> str:
    rows = [int(r) for r in rows]
    return "[" + ", ".join(map(str, rows[:most])) + (", ...]" if len(rows) > most else "]")


def check_finite(array: np.ndarray, where: Callable[[int], str], allow_nan: bool, example: str) -> None:
    """Refuse NaN (unless ``allow_nan``) and infinities in ``array`` (rows first), naming the first and the rows.

    Raises
    ------
    RequestError
        400: ``"instances[2][1]: expected a finite number, as in ..., but got NaN; ..."``.
    """
    if array.dtype.kind not in "fc" or not array.size:
        return
    bad = ~np.isfinite(array)
    if allow_nan:
        bad &= ~np.isnan(array)
    if not bad.any():
        return
    first = np.argwhere(bad)[0]
    value = float(array[tuple(first)])
    rows = np.flatnonzero(bad.reshape(len(array), -1).any(axis=1))
    if np.isnan(value):
        hint = ("; this endpoint refuses NaN (missing values): serve the model with allow_nan=True "
                "(glimr-cv serve --allow-nan) to accept them")
    else:
        hint = "; infinities are refused (a JSON number beyond ±1.8e308, such as 1e400, reads as Infinity)"
    also = f"; {len(rows)} rows hold such values: {_rows_text(rows)}" if len(rows) > 1 else ""
    raise RequestError(400, expected(_at(where, first),
                                     f"a finite number{' or NaN' if allow_nan else ''}, as in {example}",
                                     got=f"{_json_text(value)}{hint}{also}"))


def _numeric(name: str, value: Any, shape: tuple | None, dtype: str | None, example: str,
             where: Callable[[int], str], allow_nan: bool = False, bool_or_null: bool = True) -> np.ndarray:
    """The rows ``value`` of one input as an array of the input's dtype, or a 400 naming where and what."""
    if not isinstance(value, list):
        raise RequestError(400, expected(name, f"a list of rows, as in {example}", got=type(value).__name__))
    if not value:  # no rows (the caller says whether that is allowed)
        return np.zeros((0, *(d or 0 for d in (shape or ()))), dtype=dtype or "float32")

    def not_a_number() -> None:  # the slow path: find the first item that is not a number (bools are not)
        found = _first(value, lambda v: not (type(v) in (int, float) or (v is None and allow_nan)))
        if found is not None:
            path, item = found
            raise RequestError(400, expected(_at(where, path), f"numbers, as in {example}",
                                             got=_json_text(item) + ("" if item is not None else
                                                                     " (null: this endpoint refuses missing values)")))

    if bool_or_null:
        not_a_number()
    try:
        array = np.asarray(value)
    except ValueError:  # ragged rows (or a too deep nesting)
        not_a_number()

        def shape_of(row: Any) -> tuple | None:
            try:
                return np.shape(row)
            except ValueError:
                return None

        first = shape_of(value[0])
        for i, row in enumerate(value):
            got = shape_of(row)
            if got is None or got != first:
                what = ("is ragged (its items differ in length)" if got is None else
                        f"has shape {shape_text(got)}, {where(0)} has {shape_text(first)}")
                raise RequestError(400, f"{name}: expected rows of one shape {shape_text(shape) if shape else ''}, "
                                        f"as in {example}, but the rows differ in length: {where(i)} {what}") from None
        raise RequestError(400, expected(name,
                                         f"rows of one shape {shape_text(shape) if shape else ''}, as in {example}",
                                         got="rows NumPy cannot stack")) from None
    if array.dtype == object:  # numbers NumPy keeps as objects: null (when allowed), integers beyond int64
        not_a_number()
        try:
            array = np.asarray(value, dtype=np.float64)  # null -> NaN
        except OverflowError:
            path, item = _first(value, lambda v: type(v) is int and abs(v) > sys.float_info.max)
            raise RequestError(400, expected(_at(where, path), f"a finite number, as in {example}",
                                             got=f"an integer of {len(str(abs(item)))} digits "
                                                 "(beyond ±1.8e308)")) from None
    if array.dtype.kind not in "iuf":
        not_a_number()
        raise RequestError(400, expected(name, f"numbers, as in {example}",
                                         got="non-numeric values (such as strings or null)"))
    if shape is not None:
        got = array.shape[1:]
        if array.ndim == 0 or not shape_fits(got, shape):
            raise RequestError(400, expected(name, f"a list of rows of shape {shape_text(shape)}, as in {example}",
                                             got=f"{_count(array.shape[0] if array.ndim else 0, 'row')} of shape "
                                                 f"{shape_text(got)}"))
    check_finite(array, where, allow_nan, example)
    target = np.dtype(dtype or "float32")
    with np.errstate(over="ignore", invalid="ignore"):
        out = array.astype(target)
    if target.kind == "f" and array.dtype.kind == "f":
        overflow = np.isinf(out) & np.isfinite(array)
        if overflow.any():
            first = np.argwhere(overflow)[0]
            raise RequestError(400, expected(_at(where, first), f"a number within {target.name}'s range "
                                                                f"(±{np.finfo(target).max:.3g}), as in {example}",
                                             got=_json_text(float(array[tuple(first)]))))
    elif target.kind in "iu" and array.dtype.kind == "f" and np.isnan(array).any():
        first = np.argwhere(np.isnan(array))[0]
        raise RequestError(400, expected(_at(where, first), f"an integer (the input is {target.name}), as in {example}",
                                         got="NaN"))
    return out


def parse_request(body: bytes, kind: str, inputs: dict, max_rows: int, allow_nan: bool = False) -> Any:
    """The model input of a request body: an array, a list of arrays, or a dict by input name.

    Parameters
    ----------
    body : bytes
        The raw request body.
    kind, inputs
        As :func:`glimr_cv.deploy.batch.model_inputs` gives them.
    max_rows : int
        Most rows a request may hold.
    allow_nan : bool
        Accept NaN (``NaN`` or ``null`` in the JSON) as a missing value;
        infinities are refused all the same.

    Raises
    ------
    RequestError
        400 for a malformed request (nested deeper than :func:`max_depth`, not
        JSON, not ``{"instances": ...}``, wrong input names, values that are not
        finite numbers, wrong row shape, no rows), 413 for more than
        ``max_rows`` rows; the message says where (``instances[3]['a'][1]``)
        and what was expected.
    """
    example = expected_request(kind, inputs)
    depth, bool_or_null = scan_json(body)  # before parsing: the parser recurses once per level
    limit = max_depth(kind, inputs)
    if depth > limit:
        raise RequestError(400, f"request body: expected JSON nested at most {limit} levels deep, as in {example}, "
                                f"but it is nested {depth} levels deep")
    try:
        payload = json.loads(body)
    except RecursionError:  # cannot happen after the scan; kept so that no body ever gets a bare 500
        raise RequestError(400, f"request body: expected JSON nested at most {limit} levels deep, as in "
                                f"{example}, but it is nested deeper than the parser can follow") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(400, f"request body: expected JSON such as {example}, but it is not valid JSON "
                                f"({err})") from None
    if not isinstance(payload, dict):
        raise RequestError(400, expected("request body", f"a JSON object such as {example}",
                                         got=f"a {type(payload).__name__}"))
    if set(payload) != {INSTANCES}:
        raise RequestError(400, expected("request body", f"exactly the key {INSTANCES!r}, as in {example}",
                                         got=f"keys {sorted(payload)}"))
    instances = payload[INSTANCES]
    if (is_bag_model(kind, inputs) and isinstance(instances, list) and instances
            and all(isinstance(r, dict) and set(r) == {"instances"} for r in instances)):
        return _bags(instances, inputs, max_rows, example, allow_nan, bool_or_null)

    named = kind in ("dict", "list")
    as_rows = named and isinstance(instances, list) and instances and all(isinstance(r, dict) for r in instances)
    if as_rows:
        for i, row in enumerate(instances):  # rows of named inputs -> columns
            if set(row) != set(inputs):
                raise RequestError(400, expected(f"{INSTANCES}[{i}]", f"the inputs {list(inputs)}, as in {example}",
                                                 got=f"keys {sorted(row)}"))
        if len(instances) > max_rows:
            raise RequestError(413, expected(INSTANCES, f"at most {max_rows} rows per request", len(instances)))
        instances = {n: [row[n] for row in instances] for n in inputs}
    if named:
        if not isinstance(instances, dict):
            raise RequestError(400, expected(INSTANCES, f"rows of named inputs (the model takes the named inputs "
                                                        f"{list(inputs)}), as in {example}",
                                             got=type(instances).__name__))
        if set(instances) != set(inputs):
            raise RequestError(400, expected(INSTANCES, f"the inputs {list(inputs)}, as in {example}",
                                             got=f"keys {sorted(instances)}"))
        for n, column in instances.items():
            if isinstance(column, list) and len(column) > max_rows:
                raise RequestError(413, expected(INSTANCES, f"at most {max_rows} rows per request", len(column)))

        def where_of(n: str) -> Callable[[int], str]:
            if as_rows:
                return lambda i: f"{INSTANCES}[{i}][{n!r}]"
            return lambda i: f"{INSTANCES}[{n!r}][{i}]"

        arrays = {n: _numeric(f"{INSTANCES}[{n!r}]", instances[n], *inputs[n], example, where_of(n), allow_nan,
                              bool_or_null) for n in inputs}
        rows = {len(a) for a in arrays.values()}
        if len(rows) != 1:
            raise RequestError(400, expected(INSTANCES, "the same number of rows for every input",
                                             {n: len(a) for n, a in arrays.items()}))
        if rows == {0}:
            raise RequestError(400, expected(INSTANCES, f"at least one row, as in {example}", got="none"))
        return arrays if kind == "dict" else [arrays[n] for n in inputs]

    if isinstance(instances, list) and len(instances) > max_rows:
        raise RequestError(413, expected(INSTANCES, f"at most {max_rows} rows per request", len(instances)))
    if isinstance(instances, list) and not instances:
        raise RequestError(400, expected(INSTANCES, f"at least one row, as in {example}", got="none"))
    shape, dtype = next(iter(inputs.values())) if inputs else (None, None)
    return _numeric(INSTANCES, instances, shape, dtype, example, lambda i: f"{INSTANCES}[{i}]", allow_nan,
                    bool_or_null)


def _bags(rows: list, inputs: dict, max_rows: int, example: str, allow_nan: bool, bool_or_null: bool) -> dict:
    """Bags of tiles, one per row (``{"instances": [tile, ...]}``), padded to the longest and masked here."""
    from ..mil.predict import bag_batches

    if len(rows) > max_rows:
        raise RequestError(413, expected(INSTANCES, f"at most {max_rows} bags per request", len(rows)))
    shape, dtype = inputs["instances"]
    bags = []
    for i, row in enumerate(rows):
        bag = _numeric(f"{INSTANCES}[{i}]['instances']", row["instances"], shape[1:], dtype, example,
                       lambda j, i=i: f"{INSTANCES}[{i}]['instances'][{j}]", allow_nan, bool_or_null)
        if not len(bag):
            raise RequestError(400, expected(f"{INSTANCES}[{i}]['instances']", f"a bag of at least one tile, as in "
                                                                           f"{example}", got="none"))
        bags.append(bag)
    return bag_batches(bags, len(bags))[0]


def jsonable(outputs: Any) -> Any:
    """NumPy predictions as JSON values; NaN and infinities become null."""
    if isinstance(outputs, dict):
        return {k: jsonable(v) for k, v in outputs.items()}
    array = np.asarray(outputs)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return np.where(np.isfinite(array), array, None).tolist()
    return array.tolist()


def _replica_grpc_on_loopback() -> bool:
    """Make this replica's inter-deployment gRPC server listen on the loopback when its node does."""
    import ray

    from ..engine.compat import replica_grpc_on_loopback

    return replica_grpc_on_loopback(ray.is_initialized() and _is_loopback(ray.util.get_node_ip_address()))


class ModelServer:
    """The Ray Serve deployment: loads the model once per replica and answers JSON requests."""

    def __init__(self, model_path: str, max_batch_rows: int, max_body_bytes: int, allow_nan: bool = False):
        from ..keras_io import load_keras_model, model_inputs, model_output_names

        _replica_grpc_on_loopback()

        self.model = load_keras_model(model_path)
        self.model_path = model_path
        self.kind, self.inputs = model_inputs(self.model)
        self.outputs = model_output_names(self.model)
        self.max_batch_rows = int(max_batch_rows)
        self.max_body_bytes = int(max_body_bytes)
        self.allow_nan = bool(allow_nan)

    def describe(self) -> dict:
        return {
            "model": os.path.basename(self.model_path),
            "inputs": {n: {"shape": list(s), "dtype": d} for n, (s, d) in self.inputs.items()},
            "outputs": self.outputs,
            "request": expected_request(self.kind, self.inputs),
            "max_batch_rows": self.max_batch_rows,
            "max_body_bytes": self.max_body_bytes,
            "max_depth": max_depth(self.kind, self.inputs),
            "allow_nan": self.allow_nan,
        }

    async def _body(self, request) -> bytes:
        declared = request.headers.get("content-length")
        too_big = RequestError(413, f"request body: at most {self.max_body_bytes} bytes, but got "
                                    f"{declared or 'more'}; send fewer rows per request")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise too_big
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise too_big
        return bytes(body)

    def predict(self, x: Any) -> Any:
        from .batch import to_numpy_outputs

        rows = len(next(iter(x.values()))) if isinstance(x, dict) else len(x[0] if isinstance(x, list) else x)
        return to_numpy_outputs(self.model, self.model.predict(x, batch_size=max(rows, 1), verbose=0))

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        if request.method == "GET":
            return JSONResponse(self.describe())
        if request.method != "POST":
            return JSONResponse({"error": f"method {request.method}: expected POST {expected_request(self.kind, self.inputs)}"
                                          " (or GET for a description)"}, status_code=405)
        try:
            x = parse_request(await self._body(request), self.kind, self.inputs, self.max_batch_rows, self.allow_nan)
        except RequestError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        except Exception as err:  # noqa: BLE001 - a bug of ours, not the client's: a JSON answer all the same
            return JSONResponse({"error": f"request failed: {type(err).__name__}: {str(err).strip()[:500]}"},
                                status_code=500)
        try:
            outputs = self.predict(x)
        except Exception as err:  # the model refused the input: a request error when its shape was unknown
            status = 400 if self.kind == "unknown" else 500
            return JSONResponse({"error": f"prediction failed: {type(err).__name__}: {str(err).strip()[:500]}"},
                                status_code=status)
        return JSONResponse({"predictions": jsonable(outputs)})


def _import_serve():
    try:
        from ray import serve as ray_serve
        import starlette.responses  # noqa: F401  (the deployment's responses)
    except ImportError as err:
        raise ImportError(
            f"glimr_cv.serve needs Ray Serve, an optional extra: pip install 'glimr_cv[serve]' ({err})") from err
    return ray_serve


def _cluster_to_join() -> bool:
    """Whether ``ray.init()`` would join a running Ray (``RAY_ADDRESS``, or one ``ray start`` started here)."""
    if os.environ.get("RAY_ADDRESS"):
        return True
    from ..engine.compat import read_ray_address

    return bool(read_ray_address())


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _loopback_node():
    """While active, a Ray started in this process listens on 127.0.0.1 only (see :func:`glimr_cv.engine.compat.loopback_node`)."""
    from ..engine.compat import loopback_node

    return loopback_node()


def connect_ray(ray_bind: str = "loopback") -> None:
    """Connect this process to Ray: the running one, or a local Ray that listens where ``ray_bind`` says.

    ``"loopback"``: a local Ray started here listens on 127.0.0.1 only (its GCS,
    raylet, agents and workers), so nothing off this machine reaches it.
    ``"all"``: Ray's own default, every interface (what a cluster needs). A Ray
    already connected, named by ``RAY_ADDRESS`` or started by ``ray start``
    keeps its own addresses.

    Raises
    ------
    RuntimeError
        When a local Ray was started but not on the loopback (it is shut down).
    """
    check_choice("ray_bind", ray_bind, RAY_BINDS)
    import ray

    if ray.is_initialized():
        return
    from ..engine.runner import init_ray

    if ray_bind == "all" or _cluster_to_join():
        init_ray()
        return
    with _loopback_node():
        init_ray()
    host = ray.get_runtime_context().gcs_address.rpartition(":")[0]
    if not _is_loopback(host):
        ray.shutdown()
        raise RuntimeError(f"ray_bind: expected a local Ray on the loopback only, but Ray started on {host}; pass "
                           "ray_bind='all' (glimr-cv serve --ray-bind all) to accept that")


def serve(model_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, route_prefix: str = "/",
          max_batch_rows: int = 1024, max_body_bytes: int = 16 * 2**20, name: str = "glimr_cv",
          num_replicas: int = 1, num_cpus: float = 1, allow_nan: bool = False, ray_bind: str = "loopback") -> str:
    """Deploy a ``.keras`` model with Ray Serve as an HTTP JSON endpoint; returns its URL.

    Requests and answers are described in :mod:`glimr_cv.deploy.serving`. The
    call returns once the deployment is up; the endpoint runs until
    ``ray.serve.shutdown()`` (or the end of the Ray session). A local Ray starts
    if none is connected, listening on the loopback only unless
    ``ray_bind="all"``.

    Parameters
    ----------
    model_path : str
        A ``.keras`` file (custom layers must be registered and importable by
        the replicas).
    host, port : str, int
        Where Serve's HTTP proxy listens (default localhost only). Serve's HTTP
        options are fixed while Serve runs: shut it down to change them.
    route_prefix : str
        Path of the endpoint, starting with ``/``.
    max_batch_rows : int
        Most rows per request; more get HTTP 413.
    max_body_bytes : int
        Largest request body; larger gets HTTP 413.
    name : str
        Serve application name.
    num_replicas, num_cpus
        Replicas (each loads the model once) and the CPUs each reserves.
    allow_nan : bool
        Accept NaN in requests (``NaN`` or ``null``), a missing value the
        model is meant to take; by default a request holding one gets 400.
        Infinities are always refused.
    ray_bind : {"loopback", "all"}
        Where a local Ray started by this call listens (:func:`connect_ray`):
        the loopback only (default), or every interface, Ray's default. The
        HTTP endpoint listens on ``host`` either way.

    Raises
    ------
    ImportError
        Without Ray Serve: ``pip install glimr_cv[serve]``.
    FileNotFoundError, ValueError, TypeError
        On a missing or unreadable model file or bad arguments.
    """
    ray_serve = _import_serve()
    check_type("model_path", model_path, (str, os.PathLike), "the path of a .keras file")
    path = os.path.abspath(os.fspath(model_path))
    from .batch import check_keras_file

    check_keras_file(path, "model_path")  # a corrupt file is refused here, not by every replica in turn
    check_type("host", host, str, "a host name or IP address such as '127.0.0.1'")
    check_int("port", port, 1, 65535)
    check_type("route_prefix", route_prefix, str, "a path such as '/' or '/digits'")
    if not route_prefix.startswith("/"):
        raise ValueError(expected("route_prefix", "a path starting with '/'", route_prefix))
    check_int("max_batch_rows", max_batch_rows, 1)
    check_int("max_body_bytes", max_body_bytes, 1)
    check_int("num_replicas", num_replicas, 1)
    check_number("num_cpus", num_cpus, 0)
    check_bool("allow_nan", allow_nan)
    check_choice("ray_bind", ray_bind, RAY_BINDS)
    connect_ray(ray_bind)
    ray_serve.start(http_options={"host": host, "port": int(port)})
    deployment = ray_serve.deployment(name=f"{name}_model", num_replicas=num_replicas,
                                      ray_actor_options={"num_cpus": num_cpus})(ModelServer)
    ray_serve.run(deployment.bind(path, int(max_batch_rows), int(max_body_bytes), bool(allow_nan)), name=name,
                  route_prefix=route_prefix)
    return f"http://{host}:{port}{route_prefix}"
