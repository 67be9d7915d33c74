"""The ``glimr-cv`` command: run the demo; resume, report on and export an experiment; predict files; serve a model.

Exit status: 0 on success, 2 on a usage error (argparse), 1 on a user error (a
missing file or folder, a folder that is not a glimr_cv experiment, unreadable
data), printed as one line ``glimr-cv: error: ...`` (``--traceback`` shows the
traceback instead), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys

from .checks import expected

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROG = "glimr-cv"
_DATA_SUFFIXES = (".npy", ".npz", ".csv")
_OUT_SUFFIXES = (".npy", ".npz", ".csv")


class UserError(Exception):
    """A mistake of the user's (a path, a file format): one line, no traceback."""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _quiet_tensorflow() -> None:
    """Import TensorFlow with its start-up lines kept out of the terminal."""
    try:
        from .engine.quiet import import_tensorflow_quietly
    except ImportError:  # an older tree: TF_CPP_MIN_LOG_LEVEL above still quiets most
        return
    import_tensorflow_quietly(start_runtime=True)


def _experiment(path: str) -> str:
    from .engine.store import META_FILE, SEARCH_FILE

    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(full):
        raise UserError(f"{path}: no such folder; expected an experiment folder (local_dir/name)")
    if not os.path.isdir(full):
        raise UserError(f"{path}: not a folder; expected an experiment folder (local_dir/name)")
    if not any(os.path.isfile(os.path.join(full, f)) for f in (META_FILE, SEARCH_FILE)):
        raise UserError(f"{path} is not a glimr_cv experiment folder: it has no {META_FILE}; "
                        "expected the folder a search wrote (local_dir/name)")
    return full


def _existing_file(path: str, what: str, suffixes: tuple) -> str:
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file; expected {what}")
    if not os.path.isfile(path):
        raise UserError(f"{path}: not a file; expected {what}")
    if not path.lower().endswith(suffixes):
        raise UserError(f"{path}: expected {what}, a file ending in {', '.join(suffixes)}")
    return path


def _load_results(path: str):
    import warnings

    from .results.summary import load_results

    with warnings.catch_warnings(record=True) as caught:  # damage the reader repaired or named: one line each
        warnings.simplefilter("always")
        results = load_results(path)
    for warning in caught:
        _progress(f"{PROG}: warning: {' '.join(str(warning.message).split())}")
    return results


# -- subcommands -------------------------------------------------------------------------
def _demo(args) -> int:
    from .demo import run

    run(args.dir, args.name, args.samples, args.folds, None if args.racing == "none" else args.racing, args.epochs)
    return 0


def _resume(args) -> int:
    from .search import Search

    results = Search.restore(_experiment(args.path))  # runs the folder's code: resume only folders you trust
    print(results.leaderboard())
    print(f"results: {results.path}")
    return 0


def _report(args) -> int:
    path = _experiment(args.path)
    results = _load_results(path)
    print(results.leaderboard())
    from .results.report import write_report

    _progress(f"writing the report of {path} ...")
    print(f"report: {write_report(path, args.out)}")
    return 0


def _export(args) -> int:
    path = _experiment(args.path)
    if args.out is not None and not args.out.endswith(".keras"):
        raise UserError(expected("--out", "a file name ending in .keras", args.out))
    results = _load_results(path)
    cid = results.best_config_id if args.config is None else args.config
    if cid is None:
        raise UserError(f"{args.path}: no configuration is complete yet, so there is nothing to export; "
                        f"resume it first ({PROG} resume {args.path})")
    if cid not in results.configs:
        raise UserError(expected("--config", f"one of {sorted(results.configs)}", cid))
    done = results.complete_folds(cid)
    row = results.table[results.table["config_id"] == cid]
    score = ""
    mean, std = f"mean_{results.metric}", f"std_{results.metric}"
    if len(row) and mean in row:
        score = f" ({results.metric} {row.iloc[0][mean]:.4g} ± {row.iloc[0][std]:.4g})"
    out = args.out or os.path.join(path, "ensemble.keras")
    _progress(f"exporting the {len(done)} fold models of configuration {cid}{score} as one averaging model ...")
    _quiet_tensorflow()
    print(f"wrote {results.export(out, config_id=cid)}")
    return 0


def _read_data(path: str):
    import numpy as np

    lower = path.lower()
    if lower.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    if lower.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        if not arrays:
            raise UserError(f"{path}: the .npz holds no arrays")
        return next(iter(arrays.values())) if len(arrays) == 1 else arrays
    import pandas as pd

    with open(path) as f:
        first = f.readline().strip().split(",")
    try:
        [float(v) for v in first]
        header = None  # the first row is numbers: no header
    except ValueError:
        header = "infer"
    frame = pd.read_csv(path, header=header)
    if header is None:
        frame.columns = [str(c) for c in frame.columns]
    if "path" in frame.columns:  # a manifest of slide files: relative to its CSV, as the library reads one
        from .mil.slides import manifest_path

        base = os.path.dirname(os.path.abspath(path))
        frame["path"] = [manifest_path(p, base) if isinstance(p, str) else p for p in frame["path"]]
    return frame


def _rows(data) -> int:
    if isinstance(data, dict):
        return len(next(iter(data.values())))
    return len(data)


def _slide_outputs(table) -> tuple:
    """``(slide ids, predictions as predict gives them)`` of predict_slides' table (one row per slide)."""
    import numpy as np

    def stacked(column):
        values = list(table[column])
        return np.stack(values) if values else np.zeros((0, 1), dtype=np.float32)

    names = [c for c in table.columns if c.startswith("prediction")]
    outputs = {("prediction" if c == "prediction" else c.removeprefix("prediction_")): stacked(c) for c in names}
    ids = np.array([str(s) for s in table["slide"]], dtype=str)  # not objects: np.load reads them without pickle
    return ids, (outputs["prediction"] if list(outputs) == ["prediction"] else outputs)


def _write_predictions(predictions, out: str | None) -> str:
    import numpy as np
    import pandas as pd

    ids = None
    if isinstance(predictions, pd.DataFrame):  # slide files: one row per slide, its id first
        ids, predictions = _slide_outputs(predictions)
    if out is not None and out.lower().endswith(".npy"):
        if isinstance(predictions, dict):
            raise UserError(f"--out {out}: the model has several outputs {list(predictions)}; a .npy file holds one "
                            "array, so write .npz or .csv")
        np.save(out, predictions)
        return out
    if out is not None and out.lower().endswith(".npz"):
        named = predictions if isinstance(predictions, dict) else {"prediction": predictions}
        np.savez(out, **({} if ids is None else {"slide": ids}), **named)
        return out
    outputs = predictions if isinstance(predictions, dict) else {"prediction": predictions}
    columns = {} if ids is None else {"slide": ids}
    for name, values in outputs.items():
        values = np.asarray(values)
        values = values.reshape(len(values), int(np.prod(values.shape[1:])))  # zero rows keep their width
        if values.shape[1] == 1:
            columns[name] = values[:, 0]
        else:
            columns.update({f"{name}_{j}": values[:, j] for j in range(values.shape[1])})
    frame = pd.DataFrame(columns)
    if out is None:
        frame.to_csv(sys.stdout, index=False)
        return "standard output"
    frame.to_csv(out, index=False)
    return out


def _predict(args) -> int:
    model = _existing_file(args.model, "a Keras model file", (".keras",))
    data_path = _existing_file(args.data, "a data file", _DATA_SUFFIXES)
    if args.out is not None and not args.out.lower().endswith(_OUT_SUFFIXES):
        raise UserError(expected("--out", f"a file ending in {', '.join(_OUT_SUFFIXES)}", args.out))
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(expected("--batch-size", "an int >= 1", args.batch_size))
    from .deploy.batch import check_keras_file

    check_keras_file(model)  # a corrupt model is refused before TensorFlow starts
    try:
        data = _read_data(data_path)
    except (OSError, ValueError) as err:
        raise UserError(f"{data_path}: cannot read it: {err}") from err
    _progress(f"predicting {_rows(data)} rows of {data_path} with {model} ...")
    _quiet_tensorflow()
    from .deploy.batch import predict

    predictions = predict(model, data, batch_size=args.batch_size, allow_nan=args.allow_nan)
    where = _write_predictions(predictions, args.out)
    _progress(f"wrote {_rows(predictions)} predictions to {where}")
    return 0


def _serve(args) -> int:
    import time

    model = _existing_file(args.model, "a Keras model file", (".keras",))
    from .deploy.batch import check_keras_file
    from .deploy.serving import serve

    check_keras_file(model)  # a corrupt model is refused before Ray starts
    _progress(f"starting Ray Serve for {model} ...")
    url = serve(model, host=args.host, port=args.port, route_prefix=args.route_prefix,
                max_batch_rows=args.max_batch_rows, max_body_bytes=args.max_body_bytes, allow_nan=args.allow_nan,
                ray_bind=args.ray_bind)
    print(f'serving {model} at {url}: POST {{"instances": [[...], ...]}}, GET describes the inputs; '
          "Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve as ray_serve

        _progress("stopping ...")
        ray_serve.shutdown()
    return 0


# -- the parser ----------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traceback", action="store_true", help="on an error, show the traceback")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="5-fold CV search of a Keras MLP on scikit-learn's digits, on a local Ray")
    demo.add_argument("--dir", default="glimr_cv_results", help="results folder (default: %(default)s)")
    demo.add_argument("--name", default=None, help="experiment name (default: a timestamp)")
    demo.add_argument("--samples", type=int, default=12, help="configurations to try (default: %(default)s)")
    demo.add_argument("--folds", type=int, default=5, help="CV folds (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=None, help="epochs per fold (default: the demo space's)")
    from .engine.racing import RULES

    demo.add_argument("--racing", default="paired", choices=[*RULES, "none"],
                      help="racing rule, with fold stopping unless 'none' (default: %(default)s)")
    demo.set_defaults(run=_demo)

    resume = sub.add_parser("resume", help="resume an interrupted experiment")
    resume.add_argument("path", metavar="DIR", help="the experiment folder (local_dir/name)")
    resume.set_defaults(run=_resume)

    report = sub.add_parser("report", help="print an experiment's leaderboard and write its report")
    report.add_argument("path", metavar="DIR", help="the experiment folder (local_dir/name)")
    report.add_argument("--out", default=None, help="report file (default: chosen by the report, in DIR)")
    report.set_defaults(run=_report)

    export = sub.add_parser("export", help="save the best configuration's fold models as one averaging .keras model",
                            description="Save the fold models of the best configuration as ONE Keras model that "
                                        "averages their outputs; plain keras.saving.load_model loads it.")
    export.add_argument("path", metavar="DIR", help="the experiment folder (local_dir/name)")
    export.add_argument("--out", default=None, metavar="PATH", help="the .keras file (default: DIR/ensemble.keras)")
    export.add_argument("--config", type=int, default=None, metavar="ID",
                        help="export this configuration instead of the best")
    export.set_defaults(run=_export)

    predict = sub.add_parser("predict", help="predict a data file with a .keras model",
                             description="Predict the rows of DATA (.npy, .npz with one array per named input, or "
                                         ".csv, a header naming the inputs optional) with a .keras model.")
    predict.add_argument("model", metavar="MODEL", help="a .keras file (e.g. from glimr-cv export)")
    predict.add_argument("data", metavar="DATA", help="features: .npy, .npz or .csv")
    predict.add_argument("--out", default=None, metavar="FILE",
                         help="predictions: .npy (one output), .npz or .csv (default: CSV on standard output)")
    predict.add_argument("--batch-size", type=int, default=None,
                         help="rows per batch (default: 256; a slide manifest: 1 slide)")
    predict.add_argument("--allow-nan", action="store_true",
                         help="predict rows holding NaN (by default they are refused, naming the rows)")
    predict.set_defaults(run=_predict)

    serve = sub.add_parser("serve", help="serve a .keras model as a JSON HTTP endpoint with Ray Serve",
                           description='Serve a .keras model on Ray Serve: POST {"instances": [[...], ...]} answers '
                                       '{"predictions": ...}. Needs the serve extra: pip install glimr_cv[serve].')
    serve.add_argument("model", metavar="MODEL", help="a .keras file")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument("--route-prefix", default="/", help="endpoint path (default: %(default)s)")
    serve.add_argument("--max-batch-rows", type=int, default=1024, help="most rows per request (default: %(default)s)")
    serve.add_argument("--max-body-bytes", type=int, default=16 * 2**20,
                       help="largest request body in bytes (default: %(default)s)")
    serve.add_argument("--allow-nan", action="store_true",
                       help="accept NaN (NaN or null) in requests as a missing value (by default: HTTP 400)")
    serve.add_argument("--ray-bind", default="loopback", choices=["loopback", "all"],
                       help="where the local Ray started for serving listens: loopback (127.0.0.1 only) or all "
                            "interfaces, Ray's default; a Ray named by RAY_ADDRESS or started by `ray start` keeps "
                            "its own (default: %(default)s)")
    serve.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (UserError, OSError, ValueError, TypeError, ImportError, EOFError, pickle.UnpicklingError) as err:
        # a damaged folder's pickle raises EOFError or UnpicklingError: one line too
        if args.traceback:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
