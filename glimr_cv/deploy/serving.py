"""Serving: a ``.keras`` model as a JSON HTTP endpoint on Ray Serve.

``POST {"instances": [[...], ...]}`` (rows of the model's one input) or, for a
model with named inputs, ``{"instances": [{"a": [...], "b": [...]}, ...]}`` (rows)
or ``{"instances": {"a": [[...], ...], "b": [[...], ...]}}`` (columns), answers
``{"predictions": [...]}``: a list of rows for one output, a dict of lists by
output name for several. ``GET`` describes the expected request. A malformed
request gets HTTP 400 and an oversized one 413, both with ``{"error": message}``;
the service keeps running.

Ray Serve is the optional ``serve`` extra (``pip install glimr_cv[serve]``),
imported only by :func:`serve` and the deployment.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..checks import check_int, check_number, check_type

__all__ = ["serve", "ModelServer", "RequestError", "parse_request", "expected_request", "jsonable"]

INSTANCES = "instances"


class RequestError(Exception):
    """A request the endpoint refuses: ``status`` (400 or 413) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _shape_text(shape: tuple) -> str:
    dims = ["any" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _row_text(shape: tuple) -> str:
    if not shape:
        return "<number>"
    if len(shape) == 1:
        n = shape[0]
        return f"[<{'some' if n is None else n} number{'' if n == 1 else 's'}>]"
    return f"<nested list of shape {_shape_text(shape)}>"


def expected_request(kind: str, inputs: dict) -> str:
    """An example of the request body the model takes, for error messages."""
    if kind in ("dict", "list"):
        row = ", ".join(f'"{n}": {_row_text(s)}' for n, (s, _) in inputs.items())
        return f'{{"{INSTANCES}": [{{{row}}}, ...]}}'
    shape = next(iter(inputs.values()))[0] if inputs else None
    return f'{{"{INSTANCES}": [{_row_text(shape) if shape is not None else "<row>"}, ...]}}'


def _numeric(name: str, value: Any, shape: tuple | None, dtype: str | None, example: str) -> np.ndarray:
    if not isinstance(value, list):
        raise RequestError(400, f"{name}: expected a list of rows, as in {example}, but got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except ValueError:
        raise RequestError(400, f"{name}: expected rows of one shape {_shape_text(shape) if shape else ''}, as in "
                                f"{example}, but the rows differ in length") from None
    if array.dtype.kind not in "biuf":
        raise RequestError(400, f"{name}: expected numbers, as in {example}, but got non-numeric values "
                                f"(such as strings or null)")
    if shape is not None:
        got = array.shape[1:]
        if array.ndim != len(shape) + 1 or any(e is not None and e != g for e, g in zip(shape, got)):
            raise RequestError(400, f"{name}: expected a list of rows of shape {_shape_text(shape)}, as in {example}, "
                                    f"but got {_count(array.shape[0] if array.ndim else 0, 'row')} of shape {_shape_text(got)}")
    return array.astype(dtype or "float32")


def parse_request(body: bytes, kind: str, inputs: dict, max_rows: int) -> Any:
    """The model input of a request body: an array, a list of arrays, or a dict by input name.

    Parameters
    ----------
    body : bytes
        The raw request body.
    kind, inputs
        As :func:`glimr_cv.deploy.batch.model_inputs` gives them.
    max_rows : int
        Most rows a request may hold.

    Raises
    ------
    RequestError
        400 for a malformed request (not JSON, not ``{"instances": ...}``, wrong
        input names, non-numeric values, wrong row shape, no rows), 413 for more
        than ``max_rows`` rows; the message says what was expected.
    """
    example = expected_request(kind, inputs)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(400, f"request body: expected JSON such as {example}, but it is not valid JSON "
                                f"({err})") from None
    if not isinstance(payload, dict):
        raise RequestError(400, f"request body: expected a JSON object such as {example}, but got a "
                                f"{type(payload).__name__}")
    if set(payload) != {INSTANCES}:
        raise RequestError(400, f"request body: expected exactly the key {INSTANCES!r}, as in {example}, but got "
                                f"keys {sorted(payload)}")
    instances = payload[INSTANCES]

    named = kind in ("dict", "list")
    if named and isinstance(instances, list) and instances and all(isinstance(r, dict) for r in instances):
        for i, row in enumerate(instances):  # rows of named inputs -> columns
            if set(row) != set(inputs):
                raise RequestError(400, f"{INSTANCES}[{i}]: expected the inputs {list(inputs)}, as in {example}, "
                                        f"but got keys {sorted(row)}")
        if len(instances) > max_rows:
            raise RequestError(413, f"{INSTANCES}: at most {max_rows} rows per request, but got {len(instances)}")
        instances = {n: [row[n] for row in instances] for n in inputs}
    if named:
        if not isinstance(instances, dict):
            raise RequestError(400, f"{INSTANCES}: the model takes the named inputs {list(inputs)}, so expected rows "
                                    f"of named inputs, as in {example}, but got {type(instances).__name__}")
        if set(instances) != set(inputs):
            raise RequestError(400, f"{INSTANCES}: expected the inputs {list(inputs)}, as in {example}, but got keys "
                                    f"{sorted(instances)}")
        for n, column in instances.items():
            if isinstance(column, list) and len(column) > max_rows:
                raise RequestError(413, f"{INSTANCES}: at most {max_rows} rows per request, but got {len(column)}")
        arrays = {n: _numeric(f"{INSTANCES}[{n!r}]", instances[n], *inputs[n], example) for n in inputs}
        rows = {len(a) for a in arrays.values()}
        if len(rows) != 1:
            raise RequestError(400, f"{INSTANCES}: expected the same number of rows for every input, but got "
                                    f"{ {n: len(a) for n, a in arrays.items()} }")
        if rows == {0}:
            raise RequestError(400, f"{INSTANCES}: expected at least one row, as in {example}")
        return arrays if kind == "dict" else [arrays[n] for n in inputs]

    if isinstance(instances, list) and len(instances) > max_rows:
        raise RequestError(413, f"{INSTANCES}: at most {max_rows} rows per request, but got {len(instances)}")
    if isinstance(instances, list) and not instances:
        raise RequestError(400, f"{INSTANCES}: expected at least one row, as in {example}")
    shape, dtype = next(iter(inputs.values())) if inputs else (None, None)
    return _numeric(INSTANCES, instances, shape, dtype, example)


def jsonable(outputs: Any) -> Any:
    """NumPy predictions as JSON values; NaN and infinities become null."""
    if isinstance(outputs, dict):
        return {k: jsonable(v) for k, v in outputs.items()}
    array = np.asarray(outputs)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return np.where(np.isfinite(array), array, None).tolist()
    return array.tolist()


class ModelServer:
    """The Ray Serve deployment: loads the model once per replica and answers JSON requests."""

    def __init__(self, model_path: str, max_batch_rows: int, max_body_bytes: int):
        from .batch import load_keras_model, model_inputs, model_output_names

        self.model = load_keras_model(model_path)
        self.model_path = model_path
        self.kind, self.inputs = model_inputs(self.model)
        self.outputs = model_output_names(self.model)
        self.max_batch_rows = int(max_batch_rows)
        self.max_body_bytes = int(max_body_bytes)

    def describe(self) -> dict:
        return {
            "model": os.path.basename(self.model_path),
            "inputs": {n: {"shape": list(s), "dtype": d} for n, (s, d) in self.inputs.items()},
            "outputs": self.outputs,
            "request": expected_request(self.kind, self.inputs),
            "max_batch_rows": self.max_batch_rows,
            "max_body_bytes": self.max_body_bytes,
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
            x = parse_request(await self._body(request), self.kind, self.inputs, self.max_batch_rows)
        except RequestError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
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


def serve(model_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, route_prefix: str = "/",
          max_batch_rows: int = 1024, max_body_bytes: int = 16 * 2**20, name: str = "glimr_cv",
          num_replicas: int = 1, num_cpus: float = 1) -> str:
    """Deploy a ``.keras`` model with Ray Serve as an HTTP JSON endpoint; returns its URL.

    Requests and answers are described in :mod:`glimr_cv.deploy.serving`. The
    call returns once the deployment is up; the endpoint runs until
    ``ray.serve.shutdown()`` (or the end of the Ray session). A local Ray starts
    if none is connected.

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

    Raises
    ------
    ImportError
        Without Ray Serve: ``pip install glimr_cv[serve]``.
    FileNotFoundError, ValueError, TypeError
        On a missing model file or bad arguments.
    """
    ray_serve = _import_serve()
    check_type("model_path", model_path, (str, os.PathLike), "the path of a .keras file")
    path = os.path.abspath(os.fspath(model_path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model_path: no such file {path!r}; expected a .keras file")
    check_type("host", host, str, "a host name or IP address such as '127.0.0.1'")
    check_int("port", port, 1, 65535)
    check_type("route_prefix", route_prefix, str, "a path such as '/' or '/digits'")
    if not route_prefix.startswith("/"):
        raise ValueError(f"route_prefix: expected a path starting with '/', but got {route_prefix!r}")
    check_int("max_batch_rows", max_batch_rows, 1)
    check_int("max_body_bytes", max_body_bytes, 1)
    check_int("num_replicas", num_replicas, 1)
    check_number("num_cpus", num_cpus, 0)
    import ray

    if not ray.is_initialized():
        from ..engine.runner import init_ray

        init_ray()
    ray_serve.start(http_options={"host": host, "port": int(port)})
    deployment = ray_serve.deployment(name=f"{name}_model", num_replicas=num_replicas,
                                      ray_actor_options={"num_cpus": num_cpus})(ModelServer)
    ray_serve.run(deployment.bind(path, int(max_batch_rows), int(max_body_bytes)), name=name,
                  route_prefix=route_prefix)
    return f"http://{host}:{port}{route_prefix}"
