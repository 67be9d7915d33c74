"""glimr_cv.survival.discrete: the discrete-time hazard loss, checked against statsmodels' person-period logistic regression."""

import math
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
sm = pytest.importorskip("statsmodels.api")
sksurv = pytest.importorskip("sksurv")
lifelines = pytest.importorskip("lifelines")

from glimr_cv import keras_losses  # noqa: E402
from glimr_cv.survival import (  # noqa: E402
    DiscreteTimeNLL,
    discrete_risk,
    discrete_time_edges,
    discrete_time_nll,
    hazards_to_survival,
    survival_at,
    survival_labels,
)


def dataset(name):
    """(standardised covariates, time, event) of a bundled data set."""
    import pandas as pd

    if name == "rossi":
        from lifelines.datasets import load_rossi

        d = load_rossi()
        x, time, event = d.drop(columns=["week", "arrest"]), d["week"].to_numpy(float), d["arrest"].to_numpy(float)
    else:
        from sksurv import datasets

        x, y = getattr(datasets, f"load_{name}")()
        x = pd.get_dummies(x, drop_first=True, dtype=float)
        time, event = y[y.dtype.names[1]].astype(float), y[y.dtype.names[0]].astype(float)
    x = x.to_numpy(float)
    return (x - x.mean(0)) / x.std(0), time, event


def person_period(time, event, x, edges):
    """One row per subject and interval at risk: (outcome, [interval dummies, covariates]); outcome 1 in the event's interval."""
    k = len(edges) - 1
    interval = np.searchsorted(edges, time, side="right") - 1
    subject = np.repeat(np.arange(len(time)), interval + 1)
    period = np.concatenate([np.arange(j + 1) for j in interval])
    outcome = ((period == interval[subject]) & (event[subject] == 1)).astype(float)
    return outcome, np.hstack([np.eye(k)[period], x[subject]])


def nll(time, event, logits, edges):
    y = tf.constant(np.stack([time, event], 1), tf.float64)
    return float(discrete_time_nll(y, tf.constant(logits, tf.float64), edges))


def loop_reference(time, event, logits, edges):
    """Mean negative log-likelihood by a loop over rows, with plain logs of the hazards."""
    total, rows = 0.0, 0
    for t, e, x in zip(time, event, logits):
        if math.isnan(t) or math.isnan(e):
            continue
        j = int(np.searchsorted(edges, t, side="right")) - 1
        h = 1.0 / (1.0 + np.exp(-x))
        total -= np.log(1.0 - h[:j]).sum() + (np.log(h[j]) if e == 1 else np.log(1.0 - h[j]))
        rows += 1
    return total / rows


# --------------------------------------------------------------------------- edges


def test_edges_are_quantiles_of_the_event_times_like_pandas_qcut():
    import pandas as pd

    _, time, event = dataset("gbsg2")
    for k in (2, 4, 7):
        edges = discrete_time_edges(time, event, k)
        _, bins = pd.qcut(time[event == 1], q=k, retbins=True)  # PORPOISE's cut, before it widens the outer bins
        np.testing.assert_allclose(edges[1:-1], bins[1:-1], rtol=1e-12)
        assert edges[0] == 0 and edges[-1] == np.inf and len(edges) == k + 1 and edges.dtype == np.float64
    with_missing = discrete_time_edges(np.r_[time, np.nan, 5.0], np.r_[event, 1.0, np.nan], 4)
    np.testing.assert_array_equal(with_missing, discrete_time_edges(time, event, 4))


def test_edges_merge_tied_quantiles_and_refuse_fewer_than_two_intervals():
    time = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 9.0])
    event = np.array([1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(discrete_time_edges(time, event, 4), [0.0, 1.0, np.inf])  # quartiles 1, 1, 1
    np.testing.assert_array_equal(discrete_time_edges(time, event, 2), [0.0, 1.0, np.inf])
    with pytest.raises(ValueError, match=r"^intervals: expected a number of intervals that the event times' quantiles "
                                         r"can separate, but got 3; the 4 event times give 1 distinct interval"):
        discrete_time_edges([0.0, 0.0, 0.0, 0.0, 5.0], [1, 1, 1, 1, 0], 3)  # every quantile is 0
    with pytest.raises(ValueError, match=r"^event: expected at least one event \(the edges are quantiles of the event times\), but got none$"):
        discrete_time_edges([1.0, 2.0], [0, 0], 2)
    with pytest.raises(ValueError, match=r"^intervals: expected an int >= 2, but got 1$"):
        discrete_time_edges([1.0, 2.0], [1, 1], 1)
    with pytest.raises(ValueError, match=r"^event: expected 0 \(censored\), 1 \(event\) or NaN \(missing\), but got 2.0$"):
        discrete_time_edges([1.0, 2.0], [1, 2], 2)


# --------------------------------------------------------------------------- the loss against references


def test_a_hand_computed_case_and_batch_size_one():
    # hazards 1/2, 3/4, 1/4 in [0, 1), [1, 3), [3, inf)
    edges = [0.0, 1.0, 3.0, np.inf]
    logits = np.tile([0.0, math.log(3.0), -math.log(3.0)], (5, 1))
    time = np.array([0.5, 2.0, 3.0, 1.0, np.nan])
    event = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    # -log of: 1/2 (event in 0); 1/2 * 1/4 (survived 0 and 1); 1/2 * 1/4 * 1/4 (event in 2); 1/8 (t = e_1 is in 1)
    per_row = np.log([2.0, 8.0, 32.0, 8.0])
    assert abs(nll(time, event, logits, edges) - per_row.mean()) <= 1e-12  # the NaN row is skipped
    for i in range(4):
        assert abs(nll(time[i:i + 1], event[i:i + 1], logits[i:i + 1], edges) - per_row[i]) <= 1e-12
    assert nll(time[4:], event[4:], logits[4:], edges) == 0.0

    np.testing.assert_allclose(hazards_to_survival(logits[:1]), [[0.5, 0.125, 0.09375]], rtol=1e-12)
    np.testing.assert_allclose(discrete_risk(logits[:1]), [-0.71875], rtol=1e-12)
    np.testing.assert_allclose(survival_at(logits[:1], edges, [0.0, 0.99, 1.0, 2.9, 3.0, 100.0]),
                               [[1.0, 1.0, 0.5, 0.5, 0.125, 0.125]], rtol=1e-12)


@pytest.mark.parametrize("name, intervals", [("gbsg2", 4), ("rossi", 6), ("whas500", 5)])
def test_loss_equals_statsmodels_person_period_logit(name, intervals):
    x, time, event = dataset(name)
    edges = discrete_time_edges(time, event, intervals)
    assert len(edges) == intervals + 1
    outcome, design = person_period(time, event, x, edges)
    model = sm.Logit(outcome, design)  # interval dummies and covariates, no constant
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(disp=0, tol=1e-12, maxiter=100)
    n = len(time)

    def logits(params):
        return params[:intervals][None, :] + (x @ params[intervals:])[:, None]

    # (a) at statsmodels' maximum
    got = nll(time, event, logits(fit.params), edges) * n
    assert abs(got - -fit.llf) <= 1e-6 * abs(fit.llf), (got, -fit.llf)
    # (b) elsewhere
    rng = np.random.default_rng(0)
    for _ in range(3):
        params = fit.params + rng.normal(0, 0.5, len(fit.params))
        got = nll(time, event, logits(params), edges) * n
        assert abs(got - -model.loglike(params)) <= 1e-6 * abs(model.loglike(params))
    assert abs(nll(time, event, logits(params), edges) - loop_reference(time, event, logits(params), edges)) <= 1e-9

    # the gradient (score) vanishes at the maximum: the loss's gradient is right, not only its value
    params = tf.Variable(fit.params)
    with tf.GradientTape() as tape:
        out = params[:intervals][None, :] + tf.linalg.matvec(tf.constant(x), params[intervals:])[:, None]
        loss = discrete_time_nll(tf.constant(np.stack([time, event], 1)), out, edges)
    assert np.abs(tape.gradient(loss, params).numpy()).max() < 1e-6


def test_loss_is_stable_for_extreme_logits_and_skips_missing_labels_in_value_and_gradient():
    edges = [0.0, 2.0, 5.0, np.inf]
    time = np.array([1.0, 3.0, 6.0, np.nan, 2.0])
    event = np.array([1.0, 0.0, 1.0, 1.0, np.nan])
    logits = np.array([[40.0, -40.0, 0.0], [-40.0, -40.0, 3.0], [-40.0, -40.0, 40.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert abs(nll(time, event, logits, edges) - loop_reference(time, event, logits, edges)) <= 1e-9
    huge = logits.copy()
    huge[0, 0] = -800.0  # an event at hazard ~exp(-800): finite loss, as log-sigmoid gives
    assert np.isfinite(nll(time, event, huge, edges))
    pred = tf.Variable(np.where(np.isnan(time) | np.isnan(event), np.nan, 0.0)[:, None] + logits)  # NaN on skipped rows
    with tf.GradientTape() as tape:
        loss = discrete_time_nll(tf.constant(np.stack([time, event], 1)), pred, edges)
    grad = tape.gradient(loss, pred).numpy()
    assert np.isfinite(float(loss)) and np.isfinite(grad).all() and (grad[3:] == 0).all()


def test_loss_runs_traced_and_under_xla_with_unknown_batch_size():
    _, time, event = dataset("rossi")
    edges = discrete_time_edges(time, event, 5)
    logits = np.random.default_rng(1).normal(size=(len(time), 5))
    y = tf.constant(np.stack([time, event], 1), tf.float32)
    eager = float(discrete_time_nll(y, tf.constant(logits, tf.float32), edges))
    signature = [tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None, 5], tf.float32)]
    variable = tf.Variable(edges, shape=tf.TensorShape([None]))
    for jit, e in ((False, edges), (False, variable), (True, variable)):
        fn = tf.function(lambda a, b, e=e: discrete_time_nll(a, b, e), input_signature=signature, jit_compile=jit)
        assert abs(float(fn(y, tf.constant(logits, tf.float32))) - eager) <= 1e-5
    assert abs(eager - loop_reference(time, event, logits, edges)) <= 1e-5


def test_survival_functions_numpy_and_traced_agree():
    logits = np.random.default_rng(2).normal(size=(7, 4))
    h = 1.0 / (1.0 + np.exp(-logits))
    np.testing.assert_allclose(hazards_to_survival(logits), np.cumprod(1.0 - h, axis=1), rtol=1e-12)
    np.testing.assert_allclose(discrete_risk(logits), -np.cumprod(1.0 - h, axis=1).sum(1), rtol=1e-12)
    traced = tf.function(lambda v: (hazards_to_survival(v), discrete_risk(v)))(tf.constant(logits))
    np.testing.assert_allclose(traced[0].numpy(), hazards_to_survival(logits), rtol=1e-12)
    np.testing.assert_allclose(traced[1].numpy(), discrete_risk(logits), rtol=1e-12)
    np.testing.assert_allclose(discrete_risk(tf.constant(logits)), discrete_risk(logits), rtol=1e-12)  # eager: NumPy
    edges = [0.0, 1.0, 2.0, 4.0, np.inf]
    s = survival_at(logits, edges, [0.5, 1.0, 3.99, 4.0, 1e9])
    np.testing.assert_allclose(s, np.c_[np.ones(7), hazards_to_survival(logits)[:, [0, 1, 2, 2]]], rtol=1e-12)


# --------------------------------------------------------------------------- the Keras loss and fit_fold


def small_model(intervals=4, seed=0):
    x, time, event = dataset("gbsg2")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((x.shape[1],))
    model = keras.Model(inputs, keras.layers.Dense(intervals, name="surv")(inputs))
    return model, x.astype(np.float32), survival_labels(time, event)


@pytest.mark.parametrize("jit", [False, True])
def test_a_compiled_step_reads_the_edges_fit_fold_sets_without_tracing_again(jit):
    class Counting(DiscreteTimeNLL):
        traces = 0  # Python runs of call: one per trace of a step, none when a traced step runs

        def call(self, y_true, y_pred):
            Counting.traces += 1
            return super().call(y_true, y_pred)

    model, x, y = small_model()
    loss = Counting(intervals=4)
    model.compile(keras.optimizers.SGD(0.0), loss, jit_compile=jit)  # weights stay: logged losses are comparable
    folds = (y[:343], y[343:])
    edges = [discrete_time_edges(f[:, 0], f[:, 1], 4) for f in folds]
    assert not np.allclose(edges[0], edges[1])
    logits = model.predict(x, batch_size=686, verbose=0)
    counts = []
    for fold, fold_edges in zip(folds, edges):
        loss.fit_fold(fold)
        np.testing.assert_array_equal(loss.edges, fold_edges)
        logged = model.fit(x, y, batch_size=686, epochs=1, verbose=0, shuffle=False).history["loss"][0]
        evaluated = model.evaluate(x, y, batch_size=100, verbose=0)
        reference = loop_reference(y[:, 0].astype(float), y[:, 1].astype(float), logits.astype(float), fold_edges)
        assert abs(logged - reference) <= 1e-5 * reference and abs(evaluated - reference) <= 1e-5 * reference
        counts.append((Counting.traces, model.train_function, model.test_function))
    assert counts[0] == counts[1] and counts[0][0] > 0


def test_the_loss_before_any_edges_and_with_a_fold_it_cannot_cut():
    model, x, y = small_model()
    loss = DiscreteTimeNLL(intervals=4, name="nll")
    model.compile("adam", loss)
    with pytest.raises(ValueError, match=r"^nll: expected interval edges, but got none yet: pass edges=\[0, \.\.\., inf\], "
                                         r"or intervals= with a loader that knows its training labels"):
        model.fit(x, y, epochs=1, verbose=0)
    tied = np.array([[1.0, 1.0]] * 6 + [[2.0, 1.0], [3.0, 0.0]], np.float32)
    with pytest.raises(ValueError, match=r"^intervals: expected a number of intervals that the training fold's event "
                                         r"times can separate, but got 4; their quantiles give 2 distinct intervals"):
        loss.fit_fold(tied)
    assert loss.edges is None
    with pytest.raises(ValueError, match=r"^train_labels: expected labels of shape \(n, 2\)"):
        loss.fit_fold(y[:, 0])
    with pytest.raises(ValueError, match=r"^train_labels time: expected times >= 0, but got -1.0$"):
        loss.fit_fold(np.array([[-1.0, 1.0], [2.0, 1.0]]))


def test_fixed_edges_config_round_trip_and_save(tmp_path):
    edges = [0.0, 500.0, 1000.0, 2000.0, np.inf]
    fixed = DiscreteTimeNLL(edges=edges)
    fixed.fit_fold(np.array([[1.0, 1.0], [2.0, 1.0]]))  # fixed edges stay
    np.testing.assert_array_equal(fixed.edges, edges)
    assert DiscreteTimeNLL.from_config(fixed.get_config()).get_config() == fixed.get_config()

    model, x, y = small_model()
    loss = DiscreteTimeNLL(intervals=4, name="nll")
    loss.fit_fold(y[:400])
    model.compile("adam", loss)
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    before = model.evaluate(x, y, batch_size=100, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    reloaded = loaded.loss
    assert isinstance(reloaded, DiscreteTimeNLL) and reloaded.intervals == 4
    np.testing.assert_array_equal(reloaded.edges, loss.edges)  # the fitted edges come back, still fold-fitted
    assert loaded.evaluate(x, y, batch_size=100, verbose=0) == pytest.approx(before, rel=1e-6)


def test_search_space_entry_and_bad_arguments():
    losses, _ = keras_losses({"tasks": {"surv": {"loss": {"name": "nll", "loss": DiscreteTimeNLL, "kwargs": {"intervals": 4}},
                                                 "loss_weight": 1.0}}})
    assert isinstance(losses["surv"], DiscreteTimeNLL) and losses["surv"].name == "nll" and losses["surv"].intervals == 4

    with pytest.raises(ValueError, match=r"^intervals: expected an int >= 2 \(edges fitted to each training fold\), or edges=\[0, \.\.\., inf\], but got None$"):
        DiscreteTimeNLL()
    with pytest.raises(ValueError, match=r"^intervals: expected an int >= 2 or None, but got 1$"):
        DiscreteTimeNLL(intervals=1)
    with pytest.raises(ValueError, match=r"^edges: expected increasing interval edges \[0, e_1, \.\.\., inf\]"):
        DiscreteTimeNLL(edges=[0.0, 2.0, 1.0, np.inf])
    with pytest.raises(ValueError, match=r"^edges: expected increasing interval edges"):
        discrete_time_nll(np.ones((2, 2)), np.zeros((2, 2)), [1.0, 2.0, np.inf])  # first edge not 0
    with pytest.raises(ValueError, match=r"^edges: expected 4 edges for intervals=3, but got \[0.0, 1.0, inf\]$"):
        DiscreteTimeNLL(edges=[0.0, 1.0, np.inf], intervals=3)

    y = np.array([[1.0, 1.0], [2.0, 0.0], [3.0, 1.0]])
    edges = [0.0, 1.5, np.inf]
    with pytest.raises(ValueError, match=r"^y_pred: expected hazard logits \(one per interval\) of shape \(n, 2\), but got shape \(3, 3\)$"):
        discrete_time_nll(y, np.zeros((3, 3)), edges)
    with pytest.raises(ValueError, match=r"^y_pred: expected as many rows as y_true, of shape \(3, 2\), but got shape \(4, 2\)$"):
        discrete_time_nll(y, np.zeros((4, 2)), edges)
    with pytest.raises(ValueError, match=r"^y_true: expected events \(column 1\) 0 \(censored\), 1 \(event\) or NaN \(missing\), but got 2.0$"):
        discrete_time_nll(np.array([[1.0, 2.0]]), np.zeros((1, 2)), edges)
    with pytest.raises(ValueError, match=r"^y_true: expected finite times \(column 0\) >= 0, but got -1.0$"):
        discrete_time_nll(np.array([[-1.0, 1.0]]), np.zeros((1, 2)), edges)
    with pytest.raises(ValueError, match=r"^logits: expected 2 columns, one per interval of edges, but got shape \(3, 3\)$"):
        survival_at(np.zeros((3, 3)), edges, [1.0])
    with pytest.raises(ValueError, match=r"^times: expected finite times >= 0, but got -1.0$"):
        survival_at(np.zeros((3, 2)), edges, [-1.0])
