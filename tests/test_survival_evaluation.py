"""glimr_cv.survival.evaluation and its Keras metrics: Uno's C, Brier scores and Breslow survival against scikit-survival."""

import math
import warnings

import numpy as np
import pytest

sksurv = pytest.importorskip("sksurv")

from sksurv.linear_model import CoxPHSurvivalAnalysis  # noqa: E402
from sksurv.metrics import brier_score as sk_brier_score  # noqa: E402
from sksurv.metrics import concordance_index_ipcw  # noqa: E402
from sksurv.metrics import integrated_brier_score as sk_integrated_brier_score  # noqa: E402
from sksurv.nonparametric import CensoringDistributionEstimator  # noqa: E402

from glimr_cv.survival import (  # noqa: E402
    breslow_survival,
    brier_score,
    censoring_survival,
    integrated_brier_score,
    survival_labels,
    uno_concordance,
)


def split(name, seed=0, train=0.65):
    """A bundled data set split into training and test rows, the largest time among the training rows.

    Returns (x, structured y, time, event, train rows, test rows), x standardised one-hot features.
    """
    import pandas as pd
    from sksurv import datasets

    x, y = getattr(datasets, f"load_{name}")()
    x = pd.get_dummies(x, drop_first=True, dtype=float).to_numpy(float)
    x = (x - x.mean(0)) / x.std(0)
    time, event = y[y.dtype.names[1]].astype(float), y[y.dtype.names[0]].astype(float)
    order = np.random.default_rng(seed).permutation(len(time))
    order = np.r_[np.argmax(time), order[order != np.argmax(time)]]  # scikit-survival needs test times <= it
    cut = int(train * len(time))
    return x, y, time, event, order[:cut], order[cut:]


def cox_fit(x, y, rows):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoxPHSurvivalAnalysis().fit(x[rows], y[rows])


# --------------------------------------------------------------------------- NumPy references


@pytest.mark.parametrize("name", ["gbsg2", "whas500"])
def test_censoring_survival_equals_scikit_survival_everywhere(name):
    _, y, time, event, train, _ = split(name)
    reference = CensoringDistributionEstimator().fit(y[train])
    ours = censoring_survival(time[train], event[train])
    unique = np.unique(time[train])
    assert len(unique) < len(train)  # tied times
    at = np.r_[-1.0, 0.0, unique, unique[:-1] + np.diff(unique) / 2, unique - 1e-9]
    np.testing.assert_array_equal(ours(at), reference.predict_proba(at))
    beyond = [unique[-1] + 1.0]
    if reference.prob_[-1] > 0:  # the largest time holds an event: G is unknown past it
        with pytest.raises(ValueError, match=r"^times: expected times <="):
            ours(beyond)
        with pytest.raises(ValueError):
            reference.predict_proba(np.array(beyond))
    else:
        np.testing.assert_array_equal(ours(beyond), reference.predict_proba(np.array(beyond)))
    with pytest.raises(ValueError, match=r"^times: expected times <= 3.0 \(the largest training time, past which the "
                                         r"censoring distribution is unknown\), but got 4.0$"):
        censoring_survival([1.0, 2.0, 3.0], [0, 0, 1])([4.0])
    # no censoring: G is 1 everywhere; the last time censored only: 0 past it, as scikit-survival
    np.testing.assert_array_equal(censoring_survival([1.0, 2.0, 2.0], [1, 1, 1])([0.5, 2.0]), [1.0, 1.0])
    last_censored = censoring_survival([1.0, 2.0, 3.0], [1, 0, 0])
    np.testing.assert_array_equal(last_censored([2.5, 3.0, 9.0]), [0.5, 0.0, 0.0])


@pytest.mark.parametrize("name", ["gbsg2", "whas500"])
def test_uno_concordance_equals_scikit_survival_with_ties_and_tau(name):
    x, y, time, event, train, test = split(name)
    cox = cox_fit(x, y, train)
    risk = cox.predict(x[test])
    assert len(np.unique(time[test])) < len(test)
    for r in (risk, np.round(risk, 1)):  # many tied risks
        for tau in (None, float(np.quantile(time[test], 0.7))):
            expected = concordance_index_ipcw(y[train], y[test], r, tau=tau)
            got = uno_concordance(time[train], event[train], time[test], event[test], r, tau=tau, return_counts=True)
            assert abs(got[0] - expected[0]) <= 1e-6
            assert got[1:] == tuple(int(v) for v in expected[1:])
            assert uno_concordance(time[train], event[train], time[test], event[test], r, tau=tau) == got[0]


def test_uno_concordance_skips_missing_labels_and_gives_nan_without_pairs():
    _, _, time, event, train, test = split("gbsg2")
    risk = np.random.default_rng(3).normal(size=len(test))
    base = uno_concordance(time[train], event[train], time[test], event[test], risk)
    t, e = np.r_[time[test], np.nan, 5.0], np.r_[event[test], 1.0, np.nan]
    assert uno_concordance(np.r_[time[train], np.nan], np.r_[event[train], 1.0], t, e, np.r_[risk, 9.0, 9.0]) == base
    assert math.isnan(uno_concordance(time[train], event[train], time[test], event[test], np.where(risk > 1, np.nan, risk)))
    assert math.isnan(uno_concordance(time[train], event[train], [1.0, 2.0], [0, 0], [0.1, 0.2]))


@pytest.mark.parametrize("name", ["gbsg2", "whas500"])
def test_brier_scores_equal_scikit_survival_for_a_cox_model(name):
    x, y, time, event, train, test = split(name)
    cox = cox_fit(x, y, train)
    times = np.unique(np.quantile(time[test][event[test] == 1], np.linspace(0.05, 0.9, 12)))
    survival = np.array([f(times) for f in cox.predict_survival_function(x[test])])
    _, expected = sk_brier_score(y[train], y[test], survival, times)
    np.testing.assert_allclose(brier_score(time[train], event[train], time[test], event[test], survival, times),
                               expected, rtol=0, atol=1e-6)
    expected = sk_integrated_brier_score(y[train], y[test], survival, times)
    got = integrated_brier_score(time[train], event[train], time[test], event[test], survival, times)
    assert abs(got - expected) <= 1e-6
    one = brier_score(time[train], event[train], time[test], event[test], survival[:, 3], times[3])
    assert one.shape == (1,) and abs(one[0] - sk_brier_score(y[train], y[test], survival[:, 3], times[3])[1][0]) <= 1e-12


@pytest.mark.parametrize("name", ["gbsg2", "whas500"])
def test_breslow_survival_equals_scikit_survival(name):
    x, y, time, event, train, test = split(name)
    cox = cox_fit(x, y, train)
    first = time[train].min()
    times = np.r_[np.quantile(time[train], np.linspace(0, 1, 25)), np.unique(time[train])[:5], time[train].max()]
    expected = np.array([f(times) for f in cox.predict_survival_function(x[test])])
    got = breslow_survival(cox.predict(x[train]), time[train], event[train], cox.predict(x[test]), times)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # before the first training time nothing has happened yet (scikit-survival gives the value at that time)
    np.testing.assert_array_equal(breslow_survival(cox.predict(x[train]), time[train], event[train],
                                                   cox.predict(x[test]), [first / 2]), 1.0)
    # the Brier score of these survival functions, as an after-training IBS of a Cox network would use
    grid = np.unique(np.quantile(time[test][event[test] == 1], np.linspace(0.1, 0.9, 9)))
    s = breslow_survival(cox.predict(x[train]), time[train], event[train], cox.predict(x[test]), grid)
    assert abs(integrated_brier_score(time[train], event[train], time[test], event[test], s, grid)
               - sk_integrated_brier_score(y[train], y[test], s, grid)) <= 1e-6


def test_bad_input_names_the_argument():
    t, e = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 0.0, 1.0, 0.0])
    r = np.array([0.1, 0.2, 0.3, 0.4])
    s, times = np.full((4, 2), 0.5), [1.5, 2.5]
    cases = [
        (lambda: uno_concordance(t, e, t, e[:3], r), r"^test_event: expected 4 rows like test_time, but got 3$"),
        (lambda: uno_concordance(t[:3], e, t, e, r), r"^train_event: expected 3 rows like train_time, but got 4$"),
        (lambda: uno_concordance(t, e, t, e, r[:3]), r"^risk: expected 4 rows like test_time, but got 3$"),
        (lambda: uno_concordance(t, [1, 2, 0, 0], t, e, r), r"^train_event: expected 0 \(censored\), 1 \(event\) or NaN \(missing\), but got 2.0$"),
        (lambda: uno_concordance(t, e, [1.0, -2.0, 3.0, 4.0], e, r), r"^test_time: expected times >= 0, but got -2.0$"),
        (lambda: uno_concordance(t, [1, 0, 1, 1], t + 10, e, r), (r"^test_time: expected event times <= 4.0 \(the largest "
         r"training time, past which the censoring distribution is unknown\), but got 13.0; pass tau <= 4.0$")),
        (lambda: uno_concordance(t, e, t, e, r, tau=-1.0), r"^tau: expected a number >= 0 or None, but got -1.0$"),
        (lambda: uno_concordance([1.0, 2.0], [1, 0], [1.0, 2.0, 3.0], [0, 1, 0], [0.1, 0.2, 0.3]),
         (r"^test_time: expected event times where the training rows' censoring survival is > 0, that is < 2.0 .*, "
          r"but got 2.0; pass tau <= 2.0$")),
        (lambda: brier_score(t, e, t, e, s, [0.5, 2.0]), (r"^times: expected times within the test rows' follow-up "
                                                           r"\[1.0, 4.0\) \(from the first time to before the last\), but got 0.5$")),
        (lambda: brier_score(t, e, t, e, s, [2.0, 4.0]), r"^times: expected times within the test rows' follow-up \[1.0, 4.0\)"),
        (lambda: brier_score(t, e, t, e, s, [2.5, 1.5]), r"^times: expected increasing times"),
        (lambda: brier_score(t, e, t, e, s[:, :1], times), r"^survival: expected an array of shape \(n_test, 2\), one column per time"),
        (lambda: brier_score(t, e, t, e, s[:3], times), r"^survival: expected 4 rows like test_time, but got 3$"),
        (lambda: brier_score(t, e, t, e, s + 1, times), r"^survival: expected survival probabilities in \[0, 1\], but got 1.5$"),
        (lambda: brier_score(t[:2], [0, 1], t, e, s, [1.5, 2.5]), r"^times: expected times <= 2.0 \(the largest training time"),
        (lambda: integrated_brier_score(t, e, t, e, s[:, :1], [2.0]), r"^times: expected at least two times to integrate over, but got \[2.0\]$"),
        (lambda: breslow_survival(r, t, e, r, [5.0]), r"^times: expected times in \[0, 4.0\] \(the largest training time\), but got 5.0$"),
        (lambda: breslow_survival(r[:3], t, e, r, [1.0]), r"^train_risk: expected 4 rows like train_time, but got 3$"),
        (lambda: breslow_survival(r, t, e, [np.inf], [1.0]), r"^test_risk: expected finite risks, but got inf$"),
        (lambda: censoring_survival([np.nan], [1.0]), r"^time: expected at least one labelled row"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_brier_score_needs_the_training_range_only_where_a_row_enters_a_score():
    _, _, time, event, train, test = split("gbsg2")
    times = np.quantile(time[test], [0.2, 0.5])
    survival = np.random.default_rng(4).uniform(size=(len(test), 2))
    base = brier_score(time[train], event[train], time[test], event[test], survival, times)
    # a test row followed past the largest training time is a control at every time: scikit-survival refuses it
    t, e = np.r_[time[test], time.max() + 100], np.r_[event[test], 1.0]
    got = brier_score(time[train], event[train], t, e, np.r_[survival, [[0.25, 0.5]]], times)
    np.testing.assert_allclose(got, (base * len(test) + np.square([0.75, 0.5]) / censoring_survival(
        time[train], event[train])(times)) / (len(test) + 1), rtol=1e-12)


# --------------------------------------------------------------------------- Keras metrics

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from glimr_cv import keras_metrics  # noqa: E402
from glimr_cv.survival import (  # noqa: E402
    ConcordanceIndex,
    CoxLoss,
    DiscreteTimeNLL,
    IntegratedBrierScore,
    UnoConcordance,
    concordance_index,
    discrete_risk,
    discrete_time_edges,
    exponential_nll,
    survival_at,
    weibull_nll,
)


def four_heads(seed=0):
    """A GBSG2 model with one output per prediction kind: risk, 4 hazard logits, exponential and Weibull."""
    x, _, time, event, _, _ = split("gbsg2")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((x.shape[1],))
    h = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = {name: keras.layers.Dense(width, name=name)(h)
               for name, width in (("cox", 1), ("disc", 4), ("exp", 1), ("weib", 2))}
    return keras.Model(inputs, outputs), x.astype(np.float32), survival_labels(time, event)


def metric_objects():
    return {"cox": [UnoConcordance(name="uno"), ConcordanceIndex(name="c")],
            "disc": [UnoConcordance("hazard_logits", name="uno"), IntegratedBrierScore(name="ibs", intervals=4),
                     ConcordanceIndex("hazard_logits", name="c")],
            "exp": [IntegratedBrierScore("exponential", name="ibs")],
            "weib": [IntegratedBrierScore("weibull", name="ibs", times=[300.0, 600.0, 900.0, 1200.0, 1500.0])]}


def default_grid(train, val):
    events = train[train[:, 1] == 1, 0].astype(float)
    grid = np.unique(np.quantile(events, np.linspace(0.05, 0.95, 20)))
    return grid[(grid >= val[:, 0].min()) & (grid < val[:, 0].max()) & (grid <= train[:, 0].max())]


def expected_values(pred, train, val):
    """Every metric's value by the NumPy functions (and scikit-survival where it takes the same input)."""
    train = train[~np.isnan(train).any(axis=1)]
    tt, te = train[:, 0].astype(float), train[:, 1].astype(float)
    vt, ve = val[:, 0].astype(float), val[:, 1].astype(float)
    keep = ~np.isnan(vt) & ~np.isnan(ve)
    grid = default_grid(train, val[keep])
    sk_train = np.array(list(zip(te == 1, tt)), dtype=[("e", bool), ("t", float)])
    sk_val = np.array(list(zip(ve[keep] == 1, vt[keep])), dtype=[("e", bool), ("t", float)])
    out = {}
    for head, risk in (("cox", pred["cox"][:, 0]), ("disc", discrete_risk(pred["disc"]))):
        out[f"{head}_uno"] = uno_concordance(tt, te, vt, ve, risk, tau=tt.max())
        assert abs(out[f"{head}_uno"] - concordance_index_ipcw(sk_train, sk_val, risk[keep], tau=tt.max())[0]) <= 1e-9
        out[f"{head}_c"] = concordance_index(vt, ve, risk)
    s = survival_at(pred["disc"], discrete_time_edges(tt, te, 4), grid)
    out["disc_ibs"] = integrated_brier_score(tt, te, vt, ve, s, grid)
    assert abs(out["disc_ibs"] - sk_integrated_brier_score(sk_train, sk_val, s[keep], grid)) <= 1e-9
    s = np.exp(-np.exp(-pred["exp"][:, :1].astype(float)) * grid)
    out["exp_ibs"] = integrated_brier_score(tt, te, vt, ve, s, grid)
    fixed = np.array([300.0, 600.0, 900.0, 1200.0, 1500.0])
    scale, shape = np.exp(pred["weib"][:, :1].astype(float)), np.exp(pred["weib"][:, 1:].astype(float))
    out["weib_ibs"] = integrated_brier_score(tt, te, vt, ve, np.exp(-(fixed / scale) ** shape), fixed)
    return out


def fit_folds(metrics, train):
    for objects in metrics.values():
        for m in objects:
            if hasattr(m, "fit_fold"):
                m.fit_fold(train)


def test_metrics_equal_the_numpy_functions_after_evaluate_and_after_fit_fold_on_another_fold():
    model, x, y = four_heads()
    metrics = metric_objects()
    model.compile("adam", {"cox": CoxLoss(), "disc": DiscreteTimeNLL(intervals=4), "exp": exponential_nll,
                           "weib": weibull_nll}, metrics=metrics)
    model.loss["disc"].fit_fold(y[:450])
    holes = y.copy()
    holes[::9, 0] = np.nan  # missing labels are skipped
    functions = []
    for train, val in ((np.arange(450), np.arange(450, 686)), (np.arange(236, 686), np.arange(236))):
        fit_folds(metrics, holes[train])
        got = model.evaluate(x[val], {k: holes[val] for k in metrics}, batch_size=50, verbose=0, return_dict=True)
        pred = model.predict(x[val], batch_size=50, verbose=0)
        for name, value in expected_values(pred, holes[train], holes[val]).items():
            assert abs(got[name] - value) <= 1e-6, (name, got[name], value)
        functions.append(model.test_function)
    assert functions[0] is functions[1]  # the second fold's values came from the steps traced for the first


def test_metrics_in_fit_validation_logs_each_epoch():
    x, _, time, event, _, _ = split("gbsg2")
    x, y = x.astype(np.float32), survival_labels(time, event)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((x.shape[1],))
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    loss, uno, ibs = DiscreteTimeNLL(intervals=4), UnoConcordance("hazard_logits", name="uno"), IntegratedBrierScore(name="ibs")
    # SGD with learning rate 0: the predictions after training are those every epoch saw
    model.compile(keras.optimizers.SGD(0.0), loss, metrics=[uno, ibs])
    train, val = np.arange(450), np.arange(450, 686)
    for fold_fitted in (loss, uno, ibs):
        fold_fitted.fit_fold(y[train])
    logs = model.fit(x[train], y[train], validation_data=(x[val], y[val]), batch_size=64, validation_batch_size=40,
                     epochs=2, verbose=0).history
    for rows, prefix in ((val, "val_"), (train, "")):  # Keras updates compiled metrics on training batches too
        logits = model.predict(x[rows], batch_size=64, verbose=0)
        tt, te, t, e = time[train], event[train], time[rows], event[rows]
        grid = default_grid(y[train], y[rows])
        expected = {"uno": uno_concordance(tt, te, t, e, discrete_risk(logits), tau=tt.max()),
                    "ibs": integrated_brier_score(tt, te, t, e, survival_at(logits, loss.edges, grid), grid)}
        for name, value in expected.items():
            assert all(abs(v - value) <= 1e-6 for v in logs[prefix + name]), (prefix + name, logs[prefix + name], value)


def test_metric_configs_round_trip_and_entries_build_from_a_search_space():
    for metric in (UnoConcordance("hazard_logits", tau=1000.0, name="u"),
                   IntegratedBrierScore("hazard_logits", edges=[0.0, 10.0, np.inf], times=[1.0, 5.0], name="b"),
                   IntegratedBrierScore("weibull"), ConcordanceIndex("hazard_logits", name="c")):
        config = metric.get_config()
        assert type(metric).from_config(config).get_config() == config
        assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric)).get_config() == config
    built = keras_metrics({"tasks": {"s": {"metrics": [
        {"name": "uno", "metric": UnoConcordance, "kwargs": {"prediction": "hazard_logits"}},
        {"name": "ibs", "metric": IntegratedBrierScore, "kwargs": {"intervals": 4}}]}}})["s"]
    assert [m.name for m in built] == ["uno", "ibs"] and built[0].prediction == "hazard_logits" and built[1].intervals == 4


def test_metric_refusals_and_bad_input():
    with pytest.raises(ValueError, match=r"^prediction: expected one of 'hazard_logits', 'exponential', 'weibull' "
                                         r"\(a survival function per row\), but got 'risk'; a Cox model's risks need a "
                                         r"Breslow baseline .* glimr_cv.survival.breslow_survival"):
        IntegratedBrierScore("risk")
    with pytest.raises(ValueError, match=r"^prediction: expected one of 'risk', 'hazard_logits', but got 'weibull'$"):
        UnoConcordance("weibull")
    with pytest.raises(ValueError, match=r"^prediction: expected one of 'risk', 'hazard_logits', but got 'survival'$"):
        ConcordanceIndex("survival")
    with pytest.raises(ValueError, match=r"^intervals: expected None with prediction='exponential'"):
        IntegratedBrierScore("exponential", intervals=4)
    with pytest.raises(ValueError, match=r"^times: expected at least two increasing finite times, but got \[5.0, 1.0\]$"):
        IntegratedBrierScore(times=[5.0, 1.0])

    uno = UnoConcordance(name="u")
    uno.update_state(np.array([[1.0, 1.0], [2.0, 0.0]]), np.array([[0.3], [0.1]]))
    with pytest.raises(ValueError, match=r"^u: expected the training fold's labels for the censoring weights, but got none"):
        uno.result()
    with pytest.raises(ValueError, match=r"^train_labels: expected labels of shape \(n, 2\)"):
        uno.fit_fold(np.ones(3))
    uno.fit_fold(np.array([[1.0, 1.0], [3.0, 0.0], [4.0, 1.0]]))
    assert abs(float(uno.result()) - uno_concordance([1.0, 3.0, 4.0], [1, 0, 1], [1.0, 2.0], [1, 0], [0.3, 0.1], tau=4.0)) <= 1e-7
    assert math.isnan(float(tf.function(uno.result)()))  # inside a traced step: NaN, computed only eagerly
    uno.reset_state()
    assert math.isnan(float(uno.result()))
    with pytest.raises(ValueError, match=r"^u: expected events \(column 1\) 0 \(censored\), 1 \(event\) or NaN \(missing\), but got -1.0$"):
        uno.update_state(np.array([[1.0, -1.0]]), np.array([[0.3]]))
    with pytest.raises(ValueError, match=r"^u: expected predictions with as many rows as the labels, of shape \(2, 2\), but got shape \(3, 1\)$"):
        uno.update_state(np.array([[1.0, 1.0], [2.0, 0.0]]), np.zeros((3, 1)))
    ibs = IntegratedBrierScore(intervals=3, name="b")
    with pytest.raises(ValueError, match=r"^b: expected hazard logits \(one per interval\) of shape \(n, 3\), but got shape \(2, 4\)$"):
        ibs.update_state(np.array([[1.0, 1.0], [2.0, 0.0]]), np.zeros((2, 4)))

    model, x, y = four_heads()
    model.compile("adam", {"cox": CoxLoss(), "disc": DiscreteTimeNLL(intervals=4), "exp": exponential_nll,
                           "weib": weibull_nll}, metrics={"disc": [IntegratedBrierScore(name="ibs")]}, jit_compile=True)
    model.loss["disc"].fit_fold(y)
    with pytest.raises(ValueError, match=r"ibs: expected a model compiled with jit_compile=False"):
        model.evaluate(x, {k: y for k in ("cox", "disc", "exp", "weib")}, verbose=0)


def test_ibs_metric_with_too_few_times_in_range_is_nan_and_a_fold_that_cannot_be_cut_names_intervals():
    ibs = IntegratedBrierScore(times=[10.0, 20.0], name="b")
    ibs.fit_fold(np.array([[5.0, 1.0], [30.0, 0.0], [40.0, 1.0]]))
    ibs.update_state(np.array([[12.0, 1.0], [50.0, 0.0]]), np.zeros((2, 2)))
    assert math.isnan(float(ibs.result()))  # only 20.0 is within [12, 50)
    ibs = IntegratedBrierScore(name="b")
    ibs.fit_fold(np.array([[1.0, 1.0]] * 6 + [[2.0, 1.0], [9.0, 0.0]]))
    ibs.update_state(np.array([[0.5, 1.0], [1.5, 0.0], [3.0, 1.0], [8.0, 0.0]]), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"^intervals: expected 4 intervals, one per logit, from the training fold's event times, but got 2"):
        ibs.result()
