"""glimr_cv.survival: losses, Harrell's C and loaders, checked against lifelines and scikit-survival on real data."""

import math
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
lifelines = pytest.importorskip("lifelines")
sksurv = pytest.importorskip("sksurv")

from glimr_cv import keras_losses, keras_metrics, metric_names  # noqa: E402
from glimr_cv.survival import (  # noqa: E402
    ConcordanceIndex,
    CoxLoss,
    SurvivalKFoldLoader,
    concordance_index,
    cox_loss,
    event_stratified_order,
    exponential_nll,
    kfold_survival_loader,
    survival_labels,
    weibull_nll,
)

# --------------------------------------------------------------------------- data shipped in the packages


def rossi():
    """lifelines' Rossi recidivism data: 432 rows, 114 events at 49 distinct weeks (heavy ties)."""
    from lifelines.datasets import load_rossi

    d = load_rossi()
    return d, d.drop(columns=["week", "arrest"]).to_numpy(float), d["week"].to_numpy(float), d["arrest"].to_numpy(float)


def sksurv_data(name):
    """A scikit-survival data set as (one-hot float features, structured labels)."""
    import pandas as pd
    from sksurv import datasets

    x, y = getattr(datasets, f"load_{name}")()
    return pd.get_dummies(x, drop_first=True, dtype=float), y


def fitted_cox(frame, duration, event, precision=1e-7):
    from lifelines import CoxPHFitter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoxPHFitter().fit(frame, duration, event, fit_options={"precision": precision})


# --------------------------------------------------------------------------- references


def cox_reference(time, event, risk, ties):
    """Negative partial log-likelihood (a sum) and the number of events, by loops over event times."""
    keep = ~(np.isnan(time) | np.isnan(event))
    t, e, r = time[keep], event[keep], risk[keep]
    total = 0.0
    for s in sorted(set(t[e == 1])):
        tied = [i for i in range(len(t)) if t[i] == s and e[i] == 1]
        at_risk = sum(math.exp(r[j]) for j in range(len(t)) if t[j] >= s)
        tied_sum = sum(math.exp(r[i]) for i in tied)
        d = len(tied)
        total += sum(r[i] for i in tied)
        if ties == "breslow":
            total -= d * math.log(at_risk)
        else:
            total -= sum(math.log(at_risk - k / d * tied_sum) for k in range(d))
    return -total, int((e == 1).sum())


def cindex_reference(time, event, risk):
    """Harrell's C by a loop over all ordered pairs, with scikit-survival's rule for tied times."""
    num = den = 0.0
    for i in range(len(time)):
        if not event[i]:
            continue
        for j in range(len(time)):
            if time[j] > time[i] or (time[j] == time[i] and not event[j]):
                den += 1
                num += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    return num / den


def tied_data(n=60, seed=0, missing=0):
    """Times on a coarse grid (many ties), ~half censored, optionally some NaN labels."""
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 12, n).astype(float)
    event = (rng.random(n) < 0.5).astype(float)
    risk = rng.normal(size=n)
    if missing:
        time[rng.choice(n, missing, replace=False)] = np.nan
        event[rng.choice(n, missing, replace=False)] = np.nan
    return time, event, risk


def loss_value(fn, time, event, pred, **kwargs):
    y = tf.constant(np.stack([time, event], axis=1), tf.float64)
    return float(fn(y, tf.constant(pred, tf.float64), **kwargs))


# --------------------------------------------------------------------------- import hygiene


def test_importing_the_package_loads_neither_tensorflow_nor_the_reference_packages():
    code = ("import sys, glimr_cv.survival as s; s.concordance_index; s.survival_labels; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'sksurv', 'lifelines') if m in sys.modules)); "
            "s.cox_loss; s.ConcordanceIndex; "
            "print(sorted(m for m in ('sksurv', 'lifelines') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "[]"]


def test_public_names():
    import glimr_cv.survival as s

    assert sorted(s.__all__) == sorted(["survival_labels", "cox_loss", "CoxLoss", "exponential_nll", "weibull_nll",
                                        "concordance_index", "ConcordanceIndex", "event_stratified_order",
                                        "kfold_survival_loader", "SurvivalKFoldLoader", "survival_strata",
                                        # discrete-time loss, IPCW evaluation and their metrics
                                        "discrete_time_nll", "DiscreteTimeNLL", "discrete_time_edges",
                                        "hazards_to_survival", "discrete_risk", "survival_at", "uno_concordance",
                                        "UnoConcordance", "brier_score", "integrated_brier_score",
                                        "IntegratedBrierScore", "censoring_survival", "breslow_survival"])
    assert all(getattr(s, name).__doc__ for name in s.__all__)


# --------------------------------------------------------------------------- labels


def test_survival_labels_from_arrays_and_from_a_structured_array():
    _, y = sksurv_data("gbsg2")
    labels = survival_labels(y)
    assert labels.dtype == np.float32 and labels.shape == (686, 2)
    np.testing.assert_array_equal(labels[:, 0], y["time"].astype(np.float32))
    np.testing.assert_array_equal(labels[:, 1], y["cens"])
    np.testing.assert_array_equal(survival_labels(y["time"], y["cens"]), labels)
    np.testing.assert_array_equal(survival_labels(y["time"][:, None], y["cens"].astype(int)[:, None]), labels)
    missing = survival_labels([1.0, np.nan, 3.0], [1, 0, np.nan])
    assert np.isnan(missing[1, 0]) and np.isnan(missing[2, 1])


@pytest.mark.parametrize("args, error, message", [
    (([1.0, 2.0], [1, 0, 1]), ValueError, "event: expected 2 rows like time, but got 3"),
    (([1.0, 2.0], [1, 2]), ValueError, "event: expected 0 (censored), 1 (event) or NaN (missing), but got 2.0"),
    (([1.0, -2.0], [1, 0]), ValueError, "time: expected times >= 0, but got -2.0"),
    (([1.0, np.inf], [1, 0]), ValueError, "time: expected finite times (NaN for a missing label), but got inf"),
    ((np.ones((3, 2)), [1, 0, 1]), ValueError, "time: expected an array of shape (n,), but got an array of dtype float64 and shape (3, 2)"),
    ((["a", "b"], [1, 0]), TypeError, "time: expected numbers, but got an array of dtype <U1 and shape (2,)"),
    (([1.0, 2.0],), TypeError, "event: expected an array of shape (n,) (or pass a structured array as time), but got None"),
])
def test_survival_labels_bad_input_names_the_argument(args, error, message):
    with pytest.raises(error) as info:
        survival_labels(*args)
    assert str(info.value) == message


def test_survival_labels_bad_structured_arrays():
    _, y = sksurv_data("gbsg2")
    with pytest.raises(TypeError, match=r"^event: expected None when time is a structured array"):
        survival_labels(y, y["cens"])
    two_times = np.zeros(3, dtype=[("a", float), ("b", float)])
    with pytest.raises(ValueError, match=r"^time: expected a structured array with one bool event field and one numeric time field"):
        survival_labels(two_times)


# --------------------------------------------------------------------------- Cox loss


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cox_loss_equals_the_loop_reference_with_ties_and_missing_labels(ties, seed):
    time, event, risk = tied_data(n=80, seed=seed, missing=6 * seed)
    expected_sum, events = cox_reference(time, event, risk, ties)
    got = loss_value(cox_loss, time, event, risk[:, None], ties=ties)
    assert abs(got - expected_sum / events) <= 1e-9
    assert abs(loss_value(cox_loss, time, event, risk, ties=ties) - got) <= 1e-12  # (n,) as (n, 1)


def test_cox_loss_matches_lifelines_on_rossi_with_ties_and_without():
    frame, x, week, arrest = rossi()
    cph = fitted_cox(frame, "week", "arrest")
    risk = x @ cph.params_.to_numpy()  # lifelines centres x: the likelihood ignores a constant shift of risk
    got = loss_value(cox_loss, week, arrest, risk[:, None]) * arrest.sum()
    assert abs(got - -cph.log_likelihood_) <= 1e-6, (got, -cph.log_likelihood_)

    jittered = frame.assign(week=week + np.random.default_rng(0).uniform(0, 0.5, len(week)))  # no ties left
    assert jittered["week"].nunique() == len(jittered)
    cph = fitted_cox(jittered, "week", "arrest")
    risk = x @ cph.params_.to_numpy()
    for ties in ("efron", "breslow"):  # the same likelihood once no times tie
        got = loss_value(cox_loss, jittered["week"].to_numpy(), arrest, risk, ties=ties) * arrest.sum()
        assert abs(got - -cph.log_likelihood_) <= 1e-6, (ties, got, -cph.log_likelihood_)


@pytest.mark.parametrize("name", ["gbsg2", "whas500"])
def test_cox_loss_matches_lifelines_on_sksurv_data_and_its_gradient_vanishes_at_the_fit(name):
    x, y = sksurv_data(name)
    x = (x - x.mean()) / x.std()  # the score is then on one scale for every coefficient
    time_field, event_field = y.dtype.names[1], y.dtype.names[0]
    frame = x.assign(T=y[time_field], E=y[event_field].astype(float))
    cph = fitted_cox(frame, "T", "E", precision=1e-12)
    beta = tf.Variable(cph.params_[x.columns].to_numpy())
    labels = tf.constant(survival_labels(y), tf.float64)
    with tf.GradientTape() as tape:
        loss = cox_loss(labels, tf.linalg.matvec(tf.constant(x.to_numpy()), beta))
    events = y[event_field].sum()
    assert abs(float(loss) * events - -cph.log_likelihood_) <= 1e-6
    # at lifelines' maximum the score (gradient) is zero; this checks the gradient, not only the value
    assert np.abs(tape.gradient(loss, beta).numpy()).max() < 1e-6


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_loss_gradient_equals_finite_differences_of_the_reference(ties):
    time, event, risk = tied_data(n=30, seed=3, missing=3)
    pred = tf.Variable(risk)
    with tf.GradientTape() as tape:
        loss = cox_loss(tf.constant(np.stack([time, event], 1)), pred, ties=ties)
    grad = tape.gradient(loss, pred).numpy()
    h, numeric = 1e-6, np.zeros_like(risk)
    for i in range(len(risk)):
        up, down = risk.copy(), risk.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (cox_reference(time, event, up, ties)[0] - cox_reference(time, event, down, ties)[0]) / (2 * h)
    numeric /= cox_reference(time, event, risk, ties)[1]
    np.testing.assert_allclose(grad, numeric, atol=1e-7)
    masked = np.isnan(time) | np.isnan(event)
    assert (grad[masked] == 0).all()


def test_cox_loss_ignores_a_constant_shift_and_rows_with_missing_labels():
    time, event, risk = tied_data(n=50, seed=4)
    base = loss_value(cox_loss, time, event, risk)
    assert abs(loss_value(cox_loss, time, event, risk + 7.5) - base) <= 1e-9
    extra_time = np.concatenate([time, [np.nan, 3.0, np.nan]])
    extra_event = np.concatenate([event, [1.0, np.nan, np.nan]])
    extra_risk = np.concatenate([risk, [1e30, -1e30, 0.0]])  # huge risks on skipped rows change nothing
    assert abs(loss_value(cox_loss, extra_time, extra_event, extra_risk) - base) <= 1e-12


NO_EVENT = [[1.0, 0.0], [2.0, 0.0], [2.0, 0.0]]
NO_LABEL = [[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan]]
RISK = np.array([[0.3], [-1.0], [2.0]])


@pytest.mark.parametrize("fn, pred, labels", [
    (cox_loss, RISK, NO_EVENT),
    (cox_loss, RISK, NO_LABEL),
    (exponential_nll, RISK, NO_LABEL),  # censored rows do carry likelihood in parametric models
    (weibull_nll, np.array([[0.3, 0.1], [-1.0, 0.2], [2.0, -0.5]]), NO_LABEL),
])
def test_a_batch_without_events_or_labels_gives_zero_loss_and_zero_gradient(fn, pred, labels):
    pred = tf.Variable(pred)
    with tf.GradientTape() as tape:
        loss = fn(tf.constant(labels), pred)
    grad = tape.gradient(loss, pred)
    assert float(loss) == 0.0
    assert grad is not None and np.array_equal(grad.numpy(), np.zeros(pred.shape))


def test_cox_loss_runs_in_graph_mode_and_under_xla_with_unknown_batch_size():
    time, event, risk = tied_data(n=40, seed=5, missing=4)
    y = tf.constant(np.stack([time, event], 1), tf.float32)
    r = tf.constant(risk[:, None], tf.float32)
    eager = float(cox_loss(y, r))
    signature = [tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None, 1], tf.float32)]
    for jit in (False, True):
        fn = tf.function(lambda a, b: cox_loss(a, b, ties="efron"), input_signature=signature, jit_compile=jit)
        assert abs(float(fn(y, r)) - eager) <= 1e-5
    assert abs(eager - cox_reference(time, event, risk, "efron")[0] / np.nansum(event[~np.isnan(time)])) <= 1e-5


def test_cox_loss_bad_input():
    y = tf.constant([[1.0, 1.0], [2.0, 0.0]])
    with pytest.raises(ValueError, match=r"^ties: expected one of 'efron', 'breslow', but got 'exact'$"):
        cox_loss(y, tf.zeros((2, 1)), ties="exact")
    with pytest.raises(ValueError, match=r"^y_pred: expected risk scores of shape \(n, 1\) or \(n,\), but got shape \(2, 3\)$"):
        cox_loss(y, tf.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"^y_true: expected labels of shape \(n, 2\), columns time and event"):
        cox_loss(tf.constant([1.0, 2.0]), tf.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"^y_pred: expected \[log scale, log shape\] pairs of shape \(n, 2\), but got shape \(2, 1\)$"):
        weibull_nll(y, tf.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"^ties: expected one of"):
        CoxLoss(ties="exact")


# --------------------------------------------------------------------------- survival inputs checked where they enter

EVENTS = r"expected events \(column 1\) 0 \(censored\), 1 \(event\) or NaN \(missing\), but got"
LOSSES = [(cox_loss, RISK), (exponential_nll, RISK), (weibull_nll, np.zeros((3, 2)))]


@pytest.mark.parametrize("bad", [2.0, 0.5, -1.0])
def test_losses_and_the_metric_refuse_events_other_than_0_1_or_nan(bad):
    # they used to be taken: cox_loss gave the value of event 1, the C-index counted -1 and 2 as events
    y = np.array([[1.0, 1.0], [2.0, bad], [3.0, 0.0]])
    for fn, pred in LOSSES:
        with pytest.raises(ValueError, match=rf"^y_true: {EVENTS} {bad}$"):
            fn(tf.constant(y), tf.constant(pred))
    with pytest.raises(ValueError, match=rf"^c: {EVENTS} {bad}$"):
        ConcordanceIndex(name="c").update_state(y, RISK)


@pytest.mark.parametrize("bad", [-50.0, np.inf])
def test_losses_and_the_metric_refuse_negative_or_infinite_times(bad):
    y = np.array([[1.0, 1.0], [bad, 0.0], [3.0, 0.0]])
    for fn, pred in LOSSES:
        with pytest.raises(ValueError, match=rf"^y_true: expected finite times \(column 0\) >= 0, but got {bad}$"):
            fn(tf.constant(y), tf.constant(pred))
    with pytest.raises(ValueError, match=r"^c: expected finite times"):
        ConcordanceIndex(name="c").update_state(y, RISK)


def test_rows_that_differ_name_both_shapes_eager_and_traced():
    y = np.array([[1.0, 1.0], [2.0, 0.0], [3.0, 0.0]])
    for fn, pred in LOSSES:
        longer = np.concatenate([pred, pred[:1]])
        with pytest.raises(ValueError, match=rf"^y_pred: expected as many rows as y_true, of shape \(3, 2\), but got shape \(4, {pred.shape[1]}\)$"):
            fn(tf.constant(y), tf.constant(longer))
    with pytest.raises(ValueError, match=r"^c: expected predictions with as many rows as the labels, of shape \(3, 2\), but got shape \(2, 1\)$"):
        ConcordanceIndex(name="c").update_state(y, RISK[:2])
    with pytest.raises(ValueError, match=r"^y_true: expected labels of shape \(n, 2\)"):
        cox_loss(tf.constant(np.c_[y, y[:, :1]]), tf.constant(RISK))  # (n, 3): refused, not read as columns 0 and 1

    # traced with unknown batch sizes: the same messages, from assertions
    signature = [tf.TensorSpec([None, 2], tf.float64), tf.TensorSpec([None, 1], tf.float64)]
    traced = tf.function(cox_loss, input_signature=signature)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"y_pred: expected as many rows as y_true"):
        traced(tf.constant(y), tf.constant(np.concatenate([RISK, RISK])))
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"y_true: {EVENTS} other values in a batch"):
        traced(tf.constant(y + [[0.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), tf.constant(RISK))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"y_true: expected finite times \(column 0\) >= 0, but got other values in a batch"):
        traced(tf.constant(y - [[0.0, 0.0], [52.0, 0.0], [0.0, 0.0]]), tf.constant(RISK))
    assert abs(float(traced(tf.constant(y), tf.constant(RISK))) - loss_value(cox_loss, y[:, 0], y[:, 1], RISK)) <= 1e-12
    metric = ConcordanceIndex(name="c")
    update = tf.function(metric.update_state, input_signature=signature)
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"c: {EVENTS} other values in a batch"):
        update(tf.constant(y - [[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), tf.constant(RISK))


def test_concordance_metric_with_hazard_logits_ranks_by_discrete_risk():
    from glimr_cv.survival import discrete_risk

    time, event, _ = tied_data(n=60, seed=11, missing=4)
    logits = np.random.default_rng(11).normal(size=(60, 5))
    metric = ConcordanceIndex(prediction="hazard_logits")
    metric.update_state(np.stack([time, event], 1)[:30], logits[:30])
    metric.update_state(np.stack([time, event], 1)[30:], logits[30:])
    assert abs(float(metric.result()) - concordance_index(time, event, discrete_risk(logits))) <= 1e-6
    assert ConcordanceIndex.from_config(metric.get_config()).prediction == "hazard_logits"
    assert ConcordanceIndex().get_config() == {"name": "concordance_index", "dtype": "float32", "prediction": "risk"}
    with pytest.raises(ValueError, match=r"^concordance_index: expected hazard logits \(one per interval\) of shape \(n, K\), but got shape \(3,\)$"):
        metric.update_state(np.ones((3, 2)), np.ones(3))


# --------------------------------------------------------------------------- parametric losses


def test_exponential_and_weibull_nll_equal_scipy_per_row_likelihoods():
    from scipy import stats

    time, event, _ = tied_data(n=50, seed=6, missing=4)
    time = time + 0.25
    rng = np.random.default_rng(6)
    log_scale, log_shape = rng.normal(1.5, 0.3, 50), rng.normal(0.0, 0.3, 50)
    keep = ~(np.isnan(time) | np.isnan(event))
    t, e, a, b = time[keep], event[keep] == 1, log_scale[keep], log_shape[keep]

    expon = np.where(e, stats.expon.logpdf(t, scale=np.exp(a)), stats.expon.logsf(t, scale=np.exp(a)))
    assert abs(loss_value(exponential_nll, time, event, log_scale[:, None]) - -expon.mean()) <= 1e-9

    weib = stats.weibull_min(np.exp(b), scale=np.exp(a))
    ll = np.where(e, weib.logpdf(t), weib.logsf(t))
    assert abs(loss_value(weibull_nll, time, event, np.stack([log_scale, log_shape], 1)) - -ll.mean()) <= 1e-9


def test_parametric_losses_match_lifelines_fits_on_rossi():
    from lifelines import ExponentialFitter, WeibullAFTFitter, WeibullFitter

    frame, x, week, arrest = rossi()
    n = len(week)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp_fit = ExponentialFitter().fit(week, arrest)
        weib_fit = WeibullFitter().fit(week, arrest)
        aft = WeibullAFTFitter().fit(frame, "week", "arrest")
    pred = np.full((n, 1), np.log(exp_fit.lambda_))
    assert abs(loss_value(exponential_nll, week, arrest, pred) * n - -exp_fit.log_likelihood_) <= 1e-6
    pred = np.tile([np.log(weib_fit.lambda_), np.log(weib_fit.rho_)], (n, 1))
    assert abs(loss_value(weibull_nll, week, arrest, pred) * n - -weib_fit.log_likelihood_) <= 1e-6
    # a regression: log scale = x @ coefficients + intercept per row, one log shape
    lam, rho = aft.params_["lambda_"], aft.params_["rho_"]
    cols = [c for c in lam.index if c != "Intercept"]
    log_scale = frame[cols].to_numpy(float) @ lam[cols].to_numpy() + lam["Intercept"]
    pred = np.stack([log_scale, np.full(n, rho["Intercept"])], 1)
    assert abs(loss_value(weibull_nll, week, arrest, pred) * n - -aft.log_likelihood_) <= 1e-6


def test_weibull_time_zero():
    pred = np.array([[0.5, 0.2], [0.1, -0.3]])
    censored_at_zero = loss_value(weibull_nll, np.array([0.0, 2.0]), np.array([0.0, 1.0]), pred)
    only_second = loss_value(weibull_nll, np.array([np.nan, 2.0]), np.array([0.0, 1.0]), pred)
    assert abs(censored_at_zero - only_second / 2) <= 1e-12  # S(0) = 1: the row adds 0 to the sum
    # an event at time 0 has no finite likelihood: refused (it gave NaN, which failed the fold without a word)
    with pytest.raises(ValueError, match=r"^y_true: expected event times > 0 \(.*\), but got 0.0$"):
        loss_value(weibull_nll, np.array([0.0, 2.0]), np.array([1.0, 1.0]), pred)


# --------------------------------------------------------------------------- concordance index


@pytest.mark.parametrize("name", ["gbsg2", "whas500", "veterans_lung_cancer", "rossi"])
def test_concordance_index_equals_sksurv_on_real_data(name):
    from sksurv.metrics import concordance_index_censored

    if name == "rossi":
        frame, x, time, event = rossi()
        cph = fitted_cox(frame, "week", "arrest")
        risk = x @ cph.params_.to_numpy()
    else:
        x, y = sksurv_data(name)
        time, event = y[y.dtype.names[1]].astype(float), y[y.dtype.names[0]].astype(float)
        risk = x.to_numpy() @ np.random.default_rng(0).normal(size=x.shape[1])
    assert len(np.unique(time)) < len(time)  # tied times
    for r in (risk, np.round(risk, 1), np.round(risk)):  # also many tied risks
        expected = concordance_index_censored(event.astype(bool), time, r)[0]
        assert abs(concordance_index(time, event, r) - expected) <= 1e-12
    small = slice(0, 150)
    assert abs(concordance_index(time[small], event[small], risk[small])
               - cindex_reference(time[small], event[small], risk[small])) <= 1e-12


def test_concordance_index_counts_tied_times_like_sksurv():
    from sksurv.metrics import concordance_index_censored

    time = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 3.0])
    event = np.array([1, 1, 0, 1, 0, 0])
    for risk in ([3, 2, 1, 0, 0, 0], [0, 1, 2, 3, 4, 5], [1, 1, 1, 1, 1, 1]):
        risk = np.array(risk, float)
        expected = concordance_index_censored(event.astype(bool), time, risk)[0]
        assert concordance_index(time, event, risk) == pytest.approx(expected, abs=1e-12)
        assert concordance_index(time, event, risk) == pytest.approx(cindex_reference(time, event, risk), abs=1e-12)


def test_concordance_index_missing_labels_nan_risks_and_no_pairs():
    time, event, risk = tied_data(n=40, seed=7)
    base = concordance_index(time, event, risk)
    t2, e2 = np.append(time, [np.nan, 2.0]), np.append(event, [1.0, np.nan])
    assert concordance_index(t2, e2, np.append(risk, [5.0, np.nan])) == base  # skipped rows, NaN risk included
    assert math.isnan(concordance_index(time, event, np.where(np.arange(40) == 3, np.nan, risk)))
    assert math.isnan(concordance_index([1.0, 2.0], [0, 0], [0.5, 0.1]))  # no event, no comparable pair
    assert concordance_index(tf.constant(time), tf.constant(event), tf.constant(risk[:, None])) == base  # eager tensors


def test_concordance_index_bad_input():
    with pytest.raises(ValueError, match=r"^risk: expected 3 rows like time, but got 2$"):
        concordance_index([1.0, 2.0, 3.0], [1, 0, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"^event: expected 0 \(censored\), 1 \(event\) or NaN \(missing\), but got 3.0$"):
        concordance_index([1.0, 2.0], [1, 3], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"^risk: expected an array of shape \(n,\), but got an array of dtype float64 and shape \(2, 2\)$"):
        concordance_index([1.0, 2.0], [1, 0], np.zeros((2, 2)))

    @tf.function
    def symbolic(t, e, r):
        return concordance_index(t, e, r)

    with pytest.raises(TypeError, match=r"risk: expected NumPy arrays, but got a symbolic tensor; in a task's metrics use"):
        symbolic(tf.constant([1.0]), tf.constant([1.0]), tf.constant([0.5]))


# --------------------------------------------------------------------------- ConcordanceIndex metric


def gbsg2_model(seed=0):
    x, y = sksurv_data("gbsg2")
    x = x.to_numpy(np.float32)
    x = (x - x.mean(0)) / x.std(0)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((x.shape[1],))
    h = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, {"surv": keras.layers.Dense(1, name="surv")(h)})
    return model, x, survival_labels(y)


def test_metric_state_accumulates_whole_set_in_any_batching():
    time, event, risk = tied_data(n=97, seed=8, missing=5)
    labels = np.stack([time, event], 1).astype(np.float32)
    expected = concordance_index(labels[:, 0], labels[:, 1], risk.astype(np.float32))
    metric = ConcordanceIndex()
    update = tf.function(metric.update_state, input_signature=[tf.TensorSpec([None, 2]), tf.TensorSpec([None, 1])])
    for size in (1, 5, 32, 97):
        metric.reset_state()
        for start in range(0, 97, size):
            update(labels[start:start + size], risk[start:start + size, None].astype(np.float32))
        assert abs(float(metric.result()) - expected) <= 1e-6
    metric.reset_state()
    assert math.isnan(float(metric.result()))


def test_metric_equals_the_function_through_evaluate_at_several_batch_sizes():
    model, x, y = gbsg2_model()
    model.compile("adam", {"surv": CoxLoss()}, metrics={"surv": [ConcordanceIndex(name="cindex")]})
    x, y = x[:300], y[:300]
    for size in (1, 7, 64, 300):
        risk = model.predict(x, batch_size=size, verbose=0)["surv"]
        got = model.evaluate(x, {"surv": y}, batch_size=size, verbose=0, return_dict=True)["cindex"]
        assert abs(got - concordance_index(y[:, 0], y[:, 1], risk)) <= 1e-6, size


def test_metric_equals_the_function_in_fit_validation_logs_every_epoch_and_per_fold_of_a_reused_model():
    model, x, y = gbsg2_model()
    model.compile("adam", {"surv": CoxLoss()}, metrics={"surv": [ConcordanceIndex(name="cindex")]})
    initial = [v.numpy() for v in model.trainable_variables]

    class Check(keras.callbacks.Callback):
        def __init__(self, val):
            super().__init__()
            self.val, self.pairs = val, []

        def on_epoch_end(self, epoch, logs=None):
            risk = self.model.predict(x[self.val], batch_size=50, verbose=0)["surv"]
            self.pairs.append((logs["val_cindex"], concordance_index(y[self.val, 0], y[self.val, 1], risk)))

    # two "folds" on the same compiled model, reset to its initial weights in between, as glimr_cv reuses models
    for val in (np.arange(0, 343), np.arange(343, 686)):
        for v, w in zip(model.trainable_variables, initial):
            v.assign(w)
        train = np.setdiff1d(np.arange(686), val)
        check = Check(val)
        model.fit(x[train], {"surv": y[train]}, validation_data=(x[val], {"surv": y[val]}), batch_size=64,
                  validation_batch_size=50, epochs=3, verbose=0, callbacks=[check])
        for logged, recomputed in check.pairs:
            assert abs(logged - recomputed) <= 1e-6


def test_metric_skips_missing_labels_and_refuses_xla():
    model, x, y = gbsg2_model()
    model.compile("adam", {"surv": CoxLoss()}, metrics={"surv": [ConcordanceIndex(name="cindex")]})
    risk = model.predict(x, batch_size=64, verbose=0)["surv"]
    holes = y.copy()
    holes[::5, 0] = np.nan
    holes[1::7, 1] = np.nan
    got = model.evaluate(x, {"surv": holes}, batch_size=64, verbose=0, return_dict=True)["cindex"]
    assert abs(got - concordance_index(holes[:, 0], holes[:, 1], risk)) <= 1e-6
    keep = ~np.isnan(holes).any(1)
    assert abs(got - concordance_index(y[keep, 0], y[keep, 1], risk[keep])) <= 1e-6

    model.compile("adam", {"surv": CoxLoss()}, metrics={"surv": [ConcordanceIndex(name="cindex")]}, jit_compile=True)
    with pytest.raises(ValueError, match=r"cindex: expected a model compiled with jit_compile=False"):
        model.evaluate(x, {"surv": y}, batch_size=64, verbose=0)


def test_metric_bad_input():
    metric = ConcordanceIndex(name="c")
    with pytest.raises(ValueError, match=r"^c: expected labels of shape \(n, 2\), columns time and event"):
        metric.update_state(np.ones((3, 3)), np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"^c: expected risk scores of shape \(n, 1\) or \(n,\), but got shape \(3, 2\)$"):
        metric.update_state(np.ones((3, 2)), np.ones((3, 2)))


def test_model_with_survival_loss_and_metric_saves_and_reloads(tmp_path):
    model, x, y = gbsg2_model()
    model.compile("adam", {"surv": CoxLoss(ties="breslow", name="cox")},
                  metrics={"surv": [ConcordanceIndex(name="cindex")]})
    model.fit(x, {"surv": y}, batch_size=128, epochs=1, verbose=0)
    before = model.evaluate(x, {"surv": y}, batch_size=100, verbose=0, return_dict=True)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.loss["surv"].ties == "breslow"
    after = loaded.evaluate(x, {"surv": y}, batch_size=100, verbose=0, return_dict=True)
    assert after == pytest.approx(before, abs=1e-6)


# --------------------------------------------------------------------------- search-space entries


def test_survival_entries_work_through_keras_losses_and_keras_metrics():
    space_tasks = {
        "surv": {
            "loss": {"name": "cox", "loss": cox_loss, "kwargs": {"ties": "breslow"}},
            "loss_weight": 1.0,
            "metrics": [{"name": "cindex", "metric": ConcordanceIndex}],
        },
        "aux": {
            "loss": {"name": "cox", "loss": CoxLoss, "kwargs": {"ties": "breslow"}},
            "loss_weight": 0.5,
            "metrics": [{"name": "cindex", "metric": ConcordanceIndex}],
        },
        "time": {"loss": {"name": "weibull", "loss": weibull_nll}, "loss_weight": 0.1, "metrics": []},
    }
    config = {"tasks": space_tasks}
    assert metric_names(config)[:2] == ["surv_cindex", "surv_loss"]
    losses, weights = keras_losses(config)
    metrics = keras_metrics(config)
    assert isinstance(losses["aux"], CoxLoss) and losses["aux"].ties == "breslow" and losses["aux"].name == "cox"
    assert [type(m) for m in metrics["surv"]] == [ConcordanceIndex] and metrics["surv"][0].name == "cindex"
    assert weights == {"surv": 1.0, "aux": 0.5, "time": 0.1}
    time, event, risk = tied_data(n=30, seed=9)
    y = tf.constant(np.stack([time, event], 1), tf.float64)
    breslow = cox_reference(time, event, risk, "breslow")
    # a function with kwargs becomes a FunctionLoss, which saves with the model; Keras losses compute in float32
    assert type(losses["surv"]).__name__ == "FunctionLoss" and losses["surv"].fn_kwargs == {"ties": "breslow"}
    assert abs(float(losses["surv"](y, tf.constant(risk))) - breslow[0] / breslow[1]) <= 1e-6

    # a multi-task model with missing survival labels trains, and logs per-task C on validation
    model, x, labels = gbsg2_model()
    h = model.layers[1].output
    model = keras.Model(model.input, {"surv": keras.layers.Dense(1, name="surv")(h),
                                      "aux": keras.layers.Dense(1, name="aux")(h),
                                      "time": keras.layers.Dense(2, name="time")(h)})
    holes = labels.copy()
    holes[::3] = np.nan
    model.compile("adam", losses, loss_weights=weights, metrics=metrics)
    data = {"surv": holes, "aux": labels, "time": labels}
    logs = model.fit(x[:500], {k: v[:500] for k, v in data.items()}, validation_data=(x[500:], {k: v[500:] for k, v in data.items()}),
                     batch_size=64, epochs=1, verbose=0).history
    assert all(np.isfinite(logs[k][0]) for k in ("loss", "val_loss", "val_surv_cindex", "val_aux_cindex"))
    risk = model.predict(x[500:], verbose=0, batch_size=64)
    assert abs(logs["val_surv_cindex"][0] - concordance_index(holes[500:, 0], holes[500:, 1], risk["surv"])) <= 1e-6


# --------------------------------------------------------------------------- batch order and loader


def test_event_stratified_order_spreads_events_evenly():
    rng = np.random.default_rng(10)
    for n, rate, size in [(300, 0.1, 32), (301, 0.5, 64), (50, 0.04, 8), (97, 0.3, 97), (10, 1.0, 3)]:
        event = (rng.random(n) < rate).astype(float)
        event[:2] = [1.0, 0.0]
        order = event_stratified_order(event, size, seed=3)
        assert sorted(order) == list(range(n)) and order.dtype == np.int64
        counts = np.array([event[order[s:s + size]].sum() for s in range(0, n, size)])
        if event.sum() >= len(counts):
            assert counts.min() >= 1
        else:
            assert counts.max() <= 1
        full = counts[: n // size]
        assert full.max() - full.min() <= 1
        np.testing.assert_array_equal(order, event_stratified_order(event, size, seed=3))
    assert not np.array_equal(event_stratified_order(event, 3, seed=1), event_stratified_order(event, 3, seed=2))
    with pytest.raises(ValueError, match=r"^batch_size: expected an int >= 1, but got 0$"):
        event_stratified_order([1, 0], 0)
    np.testing.assert_array_equal(np.sort(event_stratified_order([np.nan, 1, 0], 2)), [0, 1, 2])


def batches(ds):
    return [(x.numpy(), y["surv"].numpy()) for x, y in ds]


def test_kfold_survival_loader_stratifies_folds_and_puts_an_event_in_every_training_batch():
    from sklearn.preprocessing import StandardScaler

    x, y = sksurv_data("whas500")  # 215 events in 500 rows
    x = x.to_numpy(np.float32)
    ystruct = y.copy()
    event = ystruct["fstat"].astype(float)
    event[:300] = 0.0  # about one row in six: shuffled batches of 8 would often hold no event
    ystruct["fstat"] = event.astype(bool)
    loader = kfold_survival_loader(x, ystruct, task="surv", preprocess=StandardScaler(), seed=4, val_batch_size=100)
    assert isinstance(loader, SurvivalKFoldLoader)
    folds = loader.folds(5)
    total = event.sum()
    for train, val in folds:
        assert abs(event[val].sum() - total / 5) <= 1  # stratified
    assert sorted(np.concatenate([v for _, v in folds])) == list(range(500))

    train, val = folds[2]
    for size in (8, 16, 64):
        train_ds, val_ds = loader(size, cv_index=2, cv_folds=5)
        n_batches = -(-len(train) // size)
        assert int(train_ds.cardinality()) == n_batches
        assert train_ds.element_spec == val_ds.element_spec  # shapes known, as Keras needs them
        epochs = [batches(train_ds) for _ in range(2)]
        for epoch in epochs:
            events = [b[1][:, 1].sum() for b in epoch]
            assert len(events) == n_batches
            assert min(events) >= 1 if event[train].sum() >= n_batches else max(events) <= 1
            seen = np.concatenate([b[1] for b in epoch])
            np.testing.assert_array_equal(np.sort(seen[:, 0]), np.sort(loader.labels["surv"][train, 0]))
        assert not all(np.array_equal(a[1], b[1]) for a, b in zip(*epochs))  # a new order every epoch
        again = batches(loader(size, cv_index=2, cv_folds=5)[0])
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(again, epochs[0]))  # the same orders on every call
    vx = np.concatenate([b[0] for b in batches(val_ds)])
    scaler = StandardScaler().fit(x[train])
    np.testing.assert_allclose(vx, scaler.transform(x[val]), atol=1e-5)  # fit on training rows, rows in order
    assert pickle.loads(pickle.dumps(loader)).folds(5)[2][1].tolist() == val.tolist()


def test_kfold_survival_loader_options_and_bad_input():
    x, y = sksurv_data("gbsg2")
    x = x.to_numpy(np.float32)
    time, event = y["time"], y["cens"].astype(float)
    groups = np.arange(len(time)) // 4
    loader = kfold_survival_loader(x, time, event, labels={"other": event}, groups=groups, shuffle=False, seed=1)
    assert loader.splitter == "stratified_group" and set(loader.labels) == {"survival", "other"}
    for train, val in loader.folds(3):
        assert not set(groups[train]) & set(groups[val])
    train_ds, _ = loader(32, cv_index=0, cv_folds=3)
    first, second = ([y["survival"].numpy() for _, y in train_ds] for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))  # shuffle=False: one order
    assert min(b[:, 1].sum() for b in first) >= 1
    assert "SurvivalKFoldLoader(task='survival', n=686" in repr(loader)

    with pytest.raises(ValueError, match=r"^labels: expected tasks other than task='survival'"):
        kfold_survival_loader(x, time, event, labels={"survival": event})
    with pytest.raises(TypeError, match=r"^task: expected a task name \(str\), but got 3$"):
        kfold_survival_loader(x, time, event, task=3)
    with pytest.raises(ValueError, match=r"^event: expected 686 rows like time, but got 10$"):
        kfold_survival_loader(x, time, event[:10])
    with pytest.raises(ValueError, match=r"^time: expected 686 rows like features, but got 685$|^labels\['survival'\]: expected 686 rows"):
        kfold_survival_loader(x, time[1:], event[1:])


def test_the_search_compiles_a_model_with_the_concordance_metric_without_xla():
    # Keras's jit_compile="auto" turns XLA on where a GPU is; the metric's growing state cannot run there
    from glimr_cv.engine.fold import TrialSpec, build_model

    def builder(config):
        inputs = keras.Input((3,))
        model = keras.Model(inputs, {"survival": keras.layers.Dense(1, name="survival")(inputs)})
        return model, {"survival": cox_loss}, {"survival": 1.0}, {"survival": [ConcordanceIndex(name="cindex")]}

    spec = TrialSpec(builder=builder, loader=None, metric="survival_cindex", mode="max", cv_folds=2,
                     task_names=["survival"], metric_names=["survival_cindex", "survival_loss", "loss"])
    params = {"optimization": {"method": "adam", "learning_rate": 0.01}}
    assert build_model(params, spec, seed=0)[0].jit_compile is False


def test_a_cohort_without_events_or_a_fold_without_events_is_refused_when_the_folds_are_made():
    import re

    from glimr_cv.survival import kfold_survival_loader, survival_strata

    x = np.zeros((12, 2), dtype="float32")
    with pytest.raises(ValueError, match=re.escape("event: expected at least one event (1) to learn from, but all 12 "
                                                   "rows are censored or missing")):
        kfold_survival_loader(x, np.arange(1, 13), np.zeros(12))
    # 3 events of 2 patients, each patient's rows together: some fold of 3 is left without an event
    groups = np.repeat(np.arange(6), 2)
    event = np.zeros(12)
    event[[0, 1, 2]] = 1
    loader = kfold_survival_loader(x, np.arange(1, 13), event, groups=groups)
    with pytest.raises(ValueError, match=r"cv_folds: fold \d has no event among its \d+ (training|validation) rows "
                                         r"\(3 events in all\)"):
        loader.folds(3)
    # time quantiles stratify within each event status
    classes = survival_strata(np.arange(1, 13), np.arange(12) % 2, time_bins=2)
    assert sorted(set(classes.tolist())) == [0, 1, 2, 3]
