#!/usr/bin/env python
"""Fold racing and in-fold stopping versus exhaustive cross-validation, on the same configurations and folds.

Workloads (``--workloads digits,auc``)
    ``digits``: scikit-learn's bundled ``digits`` (1797 rows, 64 features, 10
    classes; no network). A stratified 25% test split (``random_state=0``, 450
    rows) is kept outside cross-validation; the other 1347 rows are split by
    ``StratifiedKFold(5, shuffle=True, random_state=0)``, so fold ``i`` is the
    same rows on every call. The model is the MLP of :func:`glimr_cv.demo.builder`
    (1-2 dense layers + dropout + softmax). The space makes configurations differ
    a lot in quality::

        units {16, 32, 64, 128}, layers [1, 2], dropout [0.0, 0.5, step 0.1],
        activation {relu, tanh}, method {sgd, rms, adam},
        learning_rate loguniform(1e-4, 1e-1), batch_size {32, 64}, epochs 20

    The metric is validation ``digit_accuracy``; 30 configurations x 5 folds.

    ``auc``: scikit-learn's bundled breast cancer data (569 rows, 30 features,
    binary). A stratified 25% test split (143 rows) is kept outside CV; features
    are standardized with the 426 CV rows' statistics, which the same
    ``StratifiedKFold(5, shuffle=True, random_state=0)`` splits. The model is a
    small MLP with a sigmoid output (``benchmarks/harness.py``: ``auc_builder``);
    the metric is the validation AUC (``label_auc``, Keras ``AUC``). The space is
    one where configurations differ by less than the folds' difficulty does
    (most CV means within ~0.2 pp, fold AUCs from ~0.98 to 1.0)::

        units {4, 8, 16, 32}, layers [1, 2], dropout [0.0, 0.5, step 0.1],
        activation {relu, tanh}, method {adam, rms},
        learning_rate loguniform(3e-4, 1e-2), batch_size {16, 32}, epochs 20

    16 configurations x 5 folds.

Rules (``--rules``; exhaustive CV, ``racing=None``, always runs)
    ``forgiving``, ``paired``, ``ttest``, ``aggressive``: ``Search(racing=name)``;
    ``name+curve``: the same plus ``fold_stopping="paired_curve"``, which stops a
    fold mid-training when its learning curve is hopeless against the
    incumbent's on the same fold. The default list is ``forgiving``, ``paired``
    and ``paired+curve``, plus the rule ``Search()`` uses by default (its
    ``racing`` and ``fold_stopping`` defaults, read from its signature, named
    like the others; ``default_rule`` in the report). ``ttest`` and
    ``aggressive`` are opt-in.

Method
    For each workload and each seed (0..4 by default) the same
    ``Search(..., seed=seed)`` runs once per rule with ``num_samples = configs``.
    The seed fixes configuration ``i`` and the Keras initialisation of every
    (configuration, fold), so the runs see the same configurations and fold
    scores; the script checks both (folds stopped mid-training are checked on
    their learning curve, which must be a prefix of the exhaustive one). Ray is
    started once with ``num_cpus=2`` (two worker slots, one fold training each);
    every run writes to its own experiment directory under one temporary folder.
    The order of the runs is rotated from seed to seed, and an untimed warm-up
    run comes first in each workload, so a slow start or a drift in machine load
    does not always hit the same rule.

    Per run: fold trainings started (``results.fold_trainings``), epochs trained
    over all folds (``results.epoch_trainings``), folds stopped mid-training
    (``results.folds.stopped_early``), the wall time of ``experiment()``, the
    selected configuration (``results.best_config_id``) and its held-out test
    score: the accuracy (digits) or ROC AUC (auc) of the mean predicted
    probabilities of its fold models (``results.best_models()``), in the driver.

    Each rule is compared with exhaustive CV on the same seed:

    * ``fold_trainings_fraction`` = rule fold trainings / exhaustive fold trainings
    * ``epoch_trainings_fraction`` = rule epochs trained / exhaustive epochs trained
    * ``wall_fraction`` = rule wall time / exhaustive wall time
    * ``same_winner``: the rule selected the same config_id
    * ``cv_mean_gap`` = exhaustive winner's CV mean - rule winner's CV mean, both
      from the *exhaustive* table (full 5-fold means), so ``>= 0``; metric units
    * ``test_score_gap`` = exhaustive winner's test score - rule winner's
    * "within tolerance": same winner, or ``cv_mean_gap <= 0.002`` (0.2 pp)

    Reported per rule: the means over seeds (``same_winner_rate``,
    ``within_tolerance_rate``: shares of seeds), and ``per_seed``.

    As a diagnostic the exhaustive run's fold scores, learning curves (the
    per-epoch metric, :func:`glimr_cv.results.read_epochs`) and fit seconds are
    replayed offline through a :class:`glimr_cv.FoldScheduler` with each rule
    (:class:`glimr_cv.engine.replay.Replay`, two slots and Ray Tune's one pending
    trial; with fold stopping, the curves stop folds as the workers would):
    ``simulated_fold_trainings_fraction`` and ``simulated_epoch_trainings_fraction``
    are what the scheduler would spend given exactly those scores.

    Set-up, output and the workloads are shared with the other benchmarks
    (``benchmarks/harness.py``); only glimr_cv's public API is used. Quote the
    ratios, not absolute times: the machine may be shared and noisy.

Targets (PASS/FAIL lines, for the default rule and for ``paired+curve``, per workload)
    * digits: fold trainings <= 30% and epochs trained <= 20% of exhaustive;
    * auc: fold trainings <= 45% and epochs trained <= 35% of exhaustive;
    * wall fraction <= fold fraction + 5 percentage points;
    * same winner, or within 0.2 pp CV mean, on >= 90% of seeds.
    (means over seeds)

How to run (from the repository root)::

    .venv/bin/python benchmarks/racing.py [--quick] [--json]

``--quick``: both workloads, digits 12 configurations and auc 6, x 5 folds x 6
epochs, 1 seed, exhaustive + the default rule + ``paired+curve``: a check of the
method, not figures to quote (with at most ``2 x folds`` configurations the
scheduler trains every configuration's first fold before it has an incumbent,
so racing has little to act on). It takes about 4-5 minutes on a quiet 2-core
machine, more when other jobs share it. The full run (30 and 16 configurations
x 5 folds x 20 epochs, 5 seeds, exhaustive + forgiving, paired, paired+curve and
the default) should take about 2 hours on a quiet 2-core machine (estimated from
the quick runs' fold durations). ``--workloads``,
``--rules``, ``--seeds N``, ``--configs N``, ``--epochs N``, ``--folds N``
override it (``--configs`` and ``--epochs`` apply to every workload picked);
``--details FILE`` writes every run's raw figures (fold scores, curves,
statuses) as JSON; ``--keep`` keeps the experiment directories. With ``--json``
exactly one JSON object is printed to stdout, keyed by workload and then by
rule, with ``default_rule`` and ``versions``; everything else goes to stderr.
The exit status is 0 whatever the targets say.
"""

from __future__ import annotations

import collections
import inspect
import math
import os
import statistics
import sys
import time

import numpy as np
from glimr_cv.demo import builder as demo_builder

from harness import (AUC_METRIC, AUC_TASK, FOLDS, METRIC, SLOTS, TEST_SIZE, auc_arrays, auc_builder, auc_loader,
                     auc_space, claim_stdout, emit, heldout_arrays, heldout_loader, log, make_space, new_parser,
                     ray_session, remove_experiment, replay_search, run_search, target_lines, versions)

TOLERANCE = 0.002  # 0.2 percentage points of the metric
CURVE = "paired_curve"  # the fold_stopping of a "+curve" rule
DEFAULT_RULES = ("forgiving", "paired", "paired+curve")  # plus Search()'s default
QUICK_RULES = ("paired+curve",)  # plus Search()'s default
DEFAULT_SEEDS = 5
TARGET_WALL_MARGIN = 0.05
TARGET_WITHIN_TOLERANCE = 0.90


# -- workloads -------------------------------------------------------------------------------------------
class Workload:
    """One benchmark workload: its Search, its held-out test score and its targets."""

    def __init__(self, name, metric, task, configs, quick_configs, fold_target, epoch_target, description,
                 space, builder, loader, arrays, test_metric):
        self.name, self.metric, self.task = name, metric, task
        self.configs, self.quick_configs = configs, quick_configs
        self.epochs, self.quick_epochs = 20, 6
        self.fold_target, self.epoch_target = fold_target, epoch_target
        self.description = description
        self._space, self._builder, self._loader, self._arrays = space, builder, loader, arrays
        self.test_metric = test_metric

    def search(self, racing, fold_stopping, seed: int, epochs: int, folds: int):
        from glimr_cv import Search

        return Search(self._space(epochs), self._builder, self._loader, metric=self.metric, mode="max",
                      cv_folds=folds, seed=seed, racing=racing, fold_stopping=fold_stopping)

    def test_data(self):
        _, _, x_test, y_test = self._arrays()
        return x_test, y_test

    def test_score(self, results, x_test, y_test) -> float:
        """The test metric of the mean predicted probabilities of the selected configuration's fold models."""
        import keras

        models = results.best_models()
        if not models:
            return math.nan
        probs = []
        for model in models:
            out = model(x_test, training=False)
            probs.append(np.asarray(out[self.task] if isinstance(out, dict) else out))
        del models
        keras.backend.clear_session()
        return self.test_metric(np.mean(probs, axis=0), y_test)


def accuracy(probs, y) -> float:
    return float((probs.argmax(axis=1) == y).mean())


def roc_auc(probs, y) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, probs.reshape(-1)))


def _digits_space(epochs):
    return make_space(epochs, wide=True)


WORKLOADS = {
    "digits": Workload(
        "digits", METRIC, "digit", configs=30, quick_configs=12, fold_target=0.30, epoch_target=0.20,
        description={
            "dataset": f"sklearn digits, 450 test rows held out (stratified {TEST_SIZE:.0%}), 1347 CV rows, "
                       "StratifiedKFold(folds, shuffle, random_state=0)",
            "model": "glimr_cv.demo.builder MLP (softmax)",
            "metric": f"validation {METRIC} (max); test: accuracy of the winner's mean fold-model probabilities",
            "space": "units {16,32,64,128}, layers [1,2], dropout [0,0.5,0.1], activation {relu,tanh}, "
                     "method {sgd,rms,adam}, learning_rate loguniform(1e-4,1e-1), batch_size {32,64}",
        },
        space=_digits_space, builder=demo_builder, loader=heldout_loader, arrays=heldout_arrays,
        test_metric=accuracy),
    "auc": Workload(
        "auc", AUC_METRIC, AUC_TASK, configs=16, quick_configs=6, fold_target=0.45, epoch_target=0.35,
        description={
            "dataset": f"sklearn breast cancer, 143 test rows held out (stratified {TEST_SIZE:.0%}), 426 CV rows "
                       "standardized with the CV rows' statistics, StratifiedKFold(folds, shuffle, random_state=0)",
            "model": "benchmarks/harness.py auc_builder MLP (sigmoid)",
            "metric": f"validation {AUC_METRIC} (max); test: ROC AUC of the winner's mean fold-model probabilities",
            "space": "units {4,8,16,32}, layers [1,2], dropout [0,0.5,0.1], activation {relu,tanh}, "
                     "method {adam,rms}, learning_rate loguniform(3e-4,1e-2), batch_size {16,32}",
        },
        space=auc_space, builder=auc_builder, loader=auc_loader, arrays=auc_arrays, test_metric=roc_auc),
}


# -- rules -------------------------------------------------------------------------------------------------
def racing_names() -> list[str]:
    from glimr_cv.engine.racing import RULES

    return list(RULES)


def rule_name(racing, fold_stopping) -> str:
    """The benchmark's name of ``Search(racing=racing, fold_stopping=fold_stopping)``: "paired", "paired+curve"..."""
    from glimr_cv.engine.racing import RULES

    if racing is None:
        base = "exhaustive" if fold_stopping is None else "none"
    elif isinstance(racing, str):
        base = racing
    else:  # a rule object: its name if it is that rule with its defaults
        base = next((n for n, cls in RULES.items() if type(racing) is cls and racing == cls()), repr(racing))
    if fold_stopping is None:
        return base
    if fold_stopping == CURVE:
        return f"{base}+curve"
    from glimr_cv.engine.racing import get_epoch_rule

    return f"{base}+curve" if fold_stopping == get_epoch_rule(CURVE) else f"{base}+{fold_stopping!r}"


def search_default() -> tuple[str, object, object]:
    """``(name, racing, fold_stopping)`` of what ``Search()`` does by default, read from its signature."""
    from glimr_cv import Search

    params = inspect.signature(Search.__init__).parameters
    racing = params["racing"].default
    fold_stopping = params["fold_stopping"].default if "fold_stopping" in params else None
    if fold_stopping == "auto":  # what Search resolves it to with its default racing
        from glimr_cv.engine.racing import get_epoch_rule, get_rule

        fold_stopping = CURVE if get_epoch_rule("auto", get_rule(racing)) == get_epoch_rule(CURVE) else None
    return rule_name(racing, fold_stopping), racing, fold_stopping


def rule_spec(name: str, default: tuple) -> tuple:
    """``(racing, fold_stopping)`` of a rule name; the default rule's are Search's own default values."""
    if name == default[0]:
        return default[1], default[2]
    if name == "exhaustive":
        return None, None
    base, plus, extra = name.partition("+")
    if plus and extra != "curve":
        raise ValueError(f"rule {name!r}: expected '<racing>' or '<racing>+curve'")
    return (None if base == "none" else base), (CURVE if plus else None)


def check_interface(rules: list[str], default: tuple) -> list[str]:
    """What this script needs of glimr_cv and is missing (an empty list when all is there)."""
    missing = []
    try:
        from glimr_cv import Search, SearchResults
        from glimr_cv.engine.racing import get_rule
        from glimr_cv.engine.replay import Replay
    except Exception as err:  # the engine is being changed under us
        return [f"import: {type(err).__name__}: {err}"]
    params = inspect.signature(Search.__init__).parameters
    for name in ("racing", "fold_stopping"):
        if name not in params:
            missing.append(f"Search(..., {name}=)")
    if "epoch_trainings" not in getattr(SearchResults, "__dataclass_fields__", {}):
        missing.append("SearchResults.epoch_trainings")
    replay_params = inspect.signature(Replay.__init__).parameters
    for name in ("curves", "epoch_rule"):
        if name not in replay_params:
            missing.append(f"Replay(..., {name}=)")
    for name in rules:
        try:
            racing, fold_stopping = rule_spec(name, default)
            get_rule(racing)
            if fold_stopping is not None:
                from glimr_cv.engine.racing import get_epoch_rule

                get_epoch_rule(fold_stopping)
        except Exception as err:
            missing.append(f"rule {name!r}: {type(err).__name__}: {err}")
    try:
        from glimr_cv.results import read_epochs  # noqa: F401
    except Exception as err:
        missing.append(f"glimr_cv.results.read_epochs: {err}")
    return missing


# -- one run -------------------------------------------------------------------------------------------------
def read_curves(path: str, metric: str) -> dict[str, list[float]]:
    """``{"c/f": [metric at epoch 1, 2, ...]}`` of every fold of an experiment (the folds' ``curve``)."""
    from glimr_cv.results import read_epochs

    epochs = read_epochs(path)
    if epochs.empty or metric not in epochs:
        return {}
    return {f"{int(c)}/{int(f)}": [float(v) for v in rows.sort_values("epoch")[metric]]
            for (c, f), rows in epochs.groupby(["config_id", "fold"])}


def run_one(work: Workload, rule: str, default: tuple, seed: int, args, root: str, test) -> dict:
    racing, fold_stopping = rule_spec(rule, default)
    name = f"{work.name}_seed{seed}_{rule.replace('+', '_')}"
    load_before = os.getloadavg()[0]
    run = run_search(work.search(racing, fold_stopping, seed, args.epochs_of[work.name], args.folds), root, name,
                     num_samples=args.configs_of[work.name])
    results, wall = run.results, run.wall_seconds
    load_after = os.getloadavg()[0]

    metric = work.metric
    table = results.table.set_index("config_id")
    folds = results.folds
    done = folds[folds["status"] == "complete"]
    stopped = done[done["stopped_early"].eq(True)] if "stopped_early" in done else done.iloc[:0]
    trial_seconds = float((folds["ended_at"] - folds["started_at"]).sum())
    best = results.best_config_id
    statuses = collections.Counter(table["status"])
    pruned = table[table["status"] == "pruned"]
    try:
        test_score = work.test_score(results, *test) if best is not None else math.nan
    except Exception as err:
        log(f"  !! test score of {name} failed: {type(err).__name__}: {err}")
        test_score = math.nan
    key = lambda r: f"{int(r.config_id)}/{int(r.fold)}"  # noqa: E731
    record = {
        "rule": rule,
        "racing": repr(racing),
        "fold_stopping": repr(fold_stopping),
        "seed": seed,
        "fold_trainings": int(results.fold_trainings),
        "fold_trainings_saved": int(results.fold_trainings_saved),
        "epoch_trainings": int(results.epoch_trainings),
        "folds_stopped_early": int(len(stopped)),
        "stopped_by": {str(k): int(v) for k, v in collections.Counter(stopped.get("stopped_by", [])).items()},
        "wall_seconds": wall,
        "fit_seconds": float(done["fit_seconds"].sum()),
        "trial_seconds": trial_seconds,
        "utilisation": trial_seconds / (SLOTS * wall),
        "load_average": [load_before, load_after],
        "best_config_id": best,
        "cv_mean": float(table.loc[best, f"mean_{metric}"]) if best is not None else math.nan,
        "test_score": test_score,
        "statuses": dict(statuses),
        # finished folds of each pruned configuration -> how many configurations
        "pruned_after_folds": {str(k): int(v) for k, v in sorted(collections.Counter(pruned["folds_done"]).items())},
        "fold_scores": {key(r): float(getattr(r, metric)) for r in done.itertuples()},
        "fold_seconds": {key(r): float(r.fit_seconds) for r in done.itertuples()},
        "fold_epochs": {key(r): int(r.epochs) for r in done.itertuples()},
        "stopped_folds": sorted(key(r) for r in stopped.itertuples()),
        "failed_folds": [key(r) for r in folds[folds["status"] != "complete"].itertuples()],
        "curves": read_curves(results.path, metric),
        "means": {int(c): float(m) for c, m in table[f"mean_{metric}"].items()},
        "folds_done": {int(c): int(n) for c, n in table["folds_done"].items()},
        "status_of": {int(c): s for c, s in table["status"].items()},
        "configs": {int(c): p for c, p in results.configs.items()},
    }
    log(f"  {work.name} {rule:<15} seed {seed}: {record['fold_trainings']:>4} folds, {record['epoch_trainings']:>5} "
        f"epochs ({record['folds_stopped_early']} folds stopped early), {wall:7.1f} s, winner {best} "
        f"(CV {record['cv_mean']:.4f}, test {record['test_score']:.4f}), statuses {dict(statuses)}, "
        f"slot utilisation {record['utilisation']:.0%}, 1-min load {load_before:.1f} -> {load_after:.1f}")
    remove_experiment(root, name, args.keep)
    return record


def by_fold(figures: dict) -> dict:
    """``{"c/f": x}`` (the records' JSON-friendly keys) as ``{(c, f): x}``."""
    return {tuple(int(i) for i in key.split("/")): value for key, value in figures.items()}


# -- comparison --------------------------------------------------------------------------------------------
def simulate(ex: dict, rule: str, default: tuple, n_configs: int, n_folds: int) -> dict:
    """Replay the exhaustive run's scores, curves and fit seconds through the scheduler with ``rule``."""
    racing, fold_stopping = rule_spec(rule, default)
    try:
        summary = replay_search(racing, by_fold(ex["fold_scores"]), by_fold(ex["fold_seconds"]), n_configs, n_folds,
                                curves=by_fold(ex["curves"]), fold_stopping=fold_stopping)
    except Exception as err:  # a diagnostic: never lose a long run to it
        log(f"  !! replay of {rule} failed: {type(err).__name__}: {err}")
        return {"fold_trainings": math.nan, "epoch_trainings": math.nan, "best_config_id": None, "error": str(err)}
    return {k: summary.get(k) for k in ("fold_trainings", "epoch_trainings", "best_config_id", "statuses")}


def compare(ex: dict, run: dict, sim: dict) -> dict:
    ex_means = ex["means"]
    ex_best, best = ex["best_config_id"], run["best_config_id"]
    gap = ex_means[ex_best] - ex_means[best] if best is not None and ex_best is not None else math.nan
    stopped = set(run["stopped_folds"])
    shared = [k for k in run["fold_scores"] if k in ex["fold_scores"] and k not in stopped]
    diffs = [abs(run["fold_scores"][k] - ex["fold_scores"][k]) for k in shared]
    # a fold stopped mid-training saw the first epochs of the exhaustive run's curve
    prefix = [abs(a - b) for k in stopped if k in ex["curves"]
              for a, b in zip(run["curves"].get(k, []), ex["curves"][k])]
    same_configs = all(run["configs"][c] == ex["configs"].get(c) for c in run["configs"])
    ranked = [c for c in ex_means if ex["status_of"][c] == "complete"]
    return {
        "seed": run["seed"],
        "fold_trainings": run["fold_trainings"],
        "epoch_trainings": run["epoch_trainings"],
        "folds_stopped_early": run["folds_stopped_early"],
        "stopped_by": run["stopped_by"],
        "fold_trainings_fraction": run["fold_trainings"] / ex["fold_trainings"],
        "epoch_trainings_fraction": run["epoch_trainings"] / ex["epoch_trainings"] if ex["epoch_trainings"] else math.nan,
        "wall_fraction": run["wall_seconds"] / ex["wall_seconds"],
        "fit_seconds_fraction": run["fit_seconds"] / ex["fit_seconds"],
        "trial_seconds_fraction": run["trial_seconds"] / ex["trial_seconds"],
        "utilisation": run["utilisation"],
        "load_average": run["load_average"],
        "simulated_fold_trainings_fraction": sim["fold_trainings"] / ex["fold_trainings"]
        if sim.get("fold_trainings") is not None else math.nan,
        "simulated_epoch_trainings_fraction": sim["epoch_trainings"] / ex["epoch_trainings"]
        if sim.get("epoch_trainings") is not None and ex["epoch_trainings"] else math.nan,
        "simulated_best_config_id": sim.get("best_config_id"),
        "best_config_id": best,
        "exhaustive_best_config_id": ex_best,
        "same_winner": best == ex_best,
        "cv_mean_gap": gap,
        "within_tolerance": bool(best == ex_best or (not math.isnan(gap) and gap <= TOLERANCE)),
        "test_score": run["test_score"],
        "test_score_gap": ex["test_score"] - run["test_score"],
        "rule_winner_rank_in_exhaustive": (1 + sum(ex_means[c] > ex_means[best] for c in ranked))
        if best is not None else None,
        "statuses": run["statuses"],
        "pruned_after_folds": run["pruned_after_folds"],
        "same_configurations": same_configs,
        "shared_fold_scores": len(shared),
        "max_fold_score_diff": max(diffs) if diffs else 0.0,
        "max_curve_prefix_diff": max(prefix) if prefix else 0.0,
    }


def mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(values) if values else math.nan


SUMMED = ("fold_trainings", "epoch_trainings", "folds_stopped_early", "fold_trainings_fraction",
          "epoch_trainings_fraction", "wall_fraction", "cv_mean_gap", "test_score_gap", "fit_seconds_fraction",
          "trial_seconds_fraction", "simulated_fold_trainings_fraction", "simulated_epoch_trainings_fraction")
PER_SEED = ("seed", "fold_trainings_fraction", "epoch_trainings_fraction", "wall_fraction", "same_winner",
            "within_tolerance", "cv_mean_gap", "test_score_gap", "best_config_id", "exhaustive_best_config_id",
            "folds_stopped_early", "simulated_fold_trainings_fraction", "simulated_epoch_trainings_fraction",
            "max_fold_score_diff", "same_configurations")


def summarize(per_seed: list[dict]) -> dict:
    out = {k: mean(p[k] for p in per_seed) for k in SUMMED}
    out["same_winner_rate"] = mean(float(p["same_winner"]) for p in per_seed)
    out["within_tolerance_rate"] = mean(float(p["within_tolerance"]) for p in per_seed)
    out["per_seed"] = [{k: p[k] for k in PER_SEED} for p in per_seed]
    return out


def spread(ex: dict, n_folds: int) -> dict:
    """How much the folds differ (sd of the mean score per fold over complete configurations) against how
    much the best half of the configurations differ (sd of their CV means)."""
    complete = [c for c in ex["means"] if ex["status_of"][c] == "complete"]
    if len(complete) < 2:
        return {"fold_sd": math.nan, "config_sd_top_half": math.nan}
    by_fold_mean = [statistics.fmean(ex["fold_scores"][f"{c}/{f}"] for c in complete) for f in range(n_folds)]
    top = sorted((ex["means"][c] for c in complete), reverse=True)[:max(2, len(complete) // 2)]
    return {"fold_sd": statistics.stdev(by_fold_mean), "config_sd_top_half": statistics.stdev(top)}


def targets(work: Workload, report: dict, target_rules: list[str]) -> list[tuple[str, bool, str]]:
    out = []
    for rule in target_rules:
        r = report.get(rule)
        if r is None:
            continue
        frac, epochs, wall, tol = (r["fold_trainings_fraction"], r["epoch_trainings_fraction"], r["wall_fraction"],
                                   r["within_tolerance_rate"])
        seeds = lambda k: ", ".join(f"{p[k]:.1%}" if p[k] is not None else "n/a" for p in r["per_seed"])  # noqa: E731
        out += [
            (f"{work.name} {rule}: fold trainings <= {work.fold_target:.0%} of exhaustive",
             frac <= work.fold_target, f"{frac:.1%} (per seed: {seeds('fold_trainings_fraction')})"),
            (f"{work.name} {rule}: epochs trained <= {work.epoch_target:.0%} of exhaustive",
             epochs <= work.epoch_target, f"{epochs:.1%} (per seed: {seeds('epoch_trainings_fraction')})"),
            (f"{work.name} {rule}: wall fraction <= fold fraction + 5 pp",
             wall <= frac + TARGET_WALL_MARGIN, f"wall {wall:.1%} vs folds {frac:.1%} (epochs {epochs:.1%})"),
            (f"{work.name} {rule}: same winner or within 0.2 pp CV mean on >= 90% of seeds",
             tol >= TARGET_WITHIN_TOLERANCE,
             f"{tol:.0%} of {len(r['per_seed'])} seed(s); same winner on {r['same_winner_rate']:.0%}"),
        ]
    return out


# -- text ---------------------------------------------------------------------------------------------------
def pp(x) -> str:
    return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+6.2f}"


def frac(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def format_workload(report: dict) -> list[str]:
    w, ex = report["workload"], report["exhaustive"]
    lines = [
        f"== {w['name']}: {w['configs']} configurations x {w['folds']} folds x {w['epochs']} epochs, seeds "
        f"{w['seeds']}, {w['slots']} worker slots; {w['metric']}",
        f"exhaustive: {ex['fold_trainings']:.0f} fold trainings, {ex['epoch_trainings']:.0f} epochs, winner CV mean "
        f"{ex['cv_mean']:.4f}, winner test score {ex['test_score']:.4f}; sd of the fold means {ex['fold_sd']:.4f} vs "
        f"sd of the best half's CV means {ex['config_sd_top_half']:.4f} (means over seeds)",
        "",
        f"{'rule':<16}{'folds':>7}{'epochs':>8}{'fold frac':>10}{'epoch frac':>11}{'wall frac':>10}{'sim fold':>9}"
        f"{'sim epoch':>10}{'stopped':>8}{'same win':>9}{'within tol':>11}{'CV gap pp':>10}{'test gap pp':>12}",
    ]
    for rule in report["rules"]:
        r = report[rule]
        lines.append(
            f"{rule:<16}{r['fold_trainings']:>7.1f}{r['epoch_trainings']:>8.0f}{frac(r['fold_trainings_fraction']):>10}"
            f"{frac(r['epoch_trainings_fraction']):>11}{frac(r['wall_fraction']):>10}"
            f"{frac(r['simulated_fold_trainings_fraction']):>9}{frac(r['simulated_epoch_trainings_fraction']):>10}"
            f"{r['folds_stopped_early']:>8.1f}{r['same_winner_rate']:>9.0%}{r['within_tolerance_rate']:>11.0%}"
            f"{pp(r['cv_mean_gap']):>10}{pp(r['test_score_gap']):>12}")
    lines += ["(fractions: rule / exhaustive on the same seed, averaged over seeds, of fold trainings started, epochs "
              "trained and wall time of experiment(); 'sim' replays the exhaustive scores and curves through "
              "FoldScheduler offline; 'stopped': folds stopped mid-training; gaps: exhaustive winner minus rule "
              "winner, CV means from the exhaustive table)", "", "per seed:"]
    for rule in report["rules"]:
        for p in report["_compared"][rule]:
            lines.append(
                f"  {rule:<15} seed {p['seed']}: folds {p['fold_trainings']:>3} ({p['fold_trainings_fraction']:.3f}), "
                f"epochs {p['epoch_trainings']:>4} ({frac(p['epoch_trainings_fraction'])}), wall "
                f"{p['wall_fraction']:.3f}, winner {p['best_config_id']} vs {p['exhaustive_best_config_id']} "
                f"(rank {p['rule_winner_rank_in_exhaustive']}), CV gap {pp(p['cv_mean_gap']).strip()} pp, test gap "
                f"{pp(p['test_score_gap']).strip()} pp, pruned after n folds {p['pruned_after_folds']}, stopped "
                f"{p['stopped_by'] or 0}, max |fold score diff| {p['max_fold_score_diff']:.4f} over "
                f"{p['shared_fold_scores']}, max |curve prefix diff| {p['max_curve_prefix_diff']:.4f}"
                + ("" if p["same_configurations"] else "  !! configurations differ from exhaustive"))
    lines.append("")
    lines += target_lines((t["target"], t["pass"], t["detail"]) for t in report["targets"])
    return lines


def exhaustive_diagnostics(work: str, ex: dict, n_folds: int) -> str:
    """The exhaustive leaderboard's top, to see why racing keeps or drops configurations."""
    means = ex["means"]
    order = sorted((c for c in means if ex["status_of"][c] == "complete"), key=lambda c: -means[c])
    if not order:
        return f"  {work} exhaustive seed {ex['seed']}: no complete configuration"
    best = order[0]
    worst_fold = min(ex["fold_scores"][f"{best}/{f}"] for f in range(n_folds))
    above = [c for c in order if means[c] >= worst_fold]
    return (f"  {work} exhaustive seed {ex['seed']}: winner {best} mean {means[best]:.4f}, worst fold {worst_fold:.4f}; "
            f"{len(above)}/{len(means)} configurations have a full mean >= the winner's worst fold; means: "
            + " ".join(f"{means[c]:.3f}" for c in order))


# -- main ---------------------------------------------------------------------------------------------------
def run_workload(work: Workload, rules: list[str], default: tuple, target_rules: list[str], args, root: str,
                 warm_up: bool = True):
    configs, epochs = args.configs_of[work.name], args.epochs_of[work.name]
    started = time.perf_counter()
    test = work.test_data()
    if warm_up:  # untimed: the first experiment of a Ray session pays one-off start-up costs
        run_search(work.search(None, None, 0, 1, 2), root, f"{work.name}_warmup", num_samples=1)
        remove_experiment(root, f"{work.name}_warmup", args.keep)
        log(f"{work.name}: warm-up done after {time.perf_counter() - started:.0f} s")

    runs: dict[int, dict[str, dict]] = {}
    names = ["exhaustive", *rules]
    for seed in range(args.seeds):
        order = names[seed % len(names):] + names[:seed % len(names)]
        log(f"{work.name} seed {seed}: order {order}")
        runs[seed] = {name: run_one(work, name, default, seed, args, root, test) for name in order}
        log(exhaustive_diagnostics(work.name, runs[seed]["exhaustive"], args.folds))

    exs = [runs[s]["exhaustive"] for s in runs]
    spreads = [spread(e, args.folds) for e in exs]
    report = {
        "workload": {"name": work.name, **work.description, "configs": configs, "folds": args.folds,
                     "epochs": epochs, "seeds": list(runs), "slots": SLOTS,
                     "targets": {"fold_trainings_fraction": work.fold_target,
                                 "epoch_trainings_fraction": work.epoch_target},
                     "seconds": time.perf_counter() - started},
        "exhaustive": {
            "fold_trainings": mean(e["fold_trainings"] for e in exs),
            "epoch_trainings": mean(e["epoch_trainings"] for e in exs),
            "wall_seconds": mean(e["wall_seconds"] for e in exs),
            "fit_seconds": mean(e["fit_seconds"] for e in exs),
            "cv_mean": mean(e["cv_mean"] for e in exs),
            "test_score": mean(e["test_score"] for e in exs),
            "fold_sd": mean(s["fold_sd"] for s in spreads),
            "config_sd_top_half": mean(s["config_sd_top_half"] for s in spreads),
            "per_seed": [{**{k: e[k] for k in ("seed", "fold_trainings", "epoch_trainings", "wall_seconds",
                                               "best_config_id", "cv_mean", "test_score", "statuses", "utilisation",
                                               "load_average")}, **s} for e, s in zip(exs, spreads)],
        },
        "rules": rules,
    }
    compared = {}
    for rule in rules:
        compared[rule] = [compare(runs[s]["exhaustive"], runs[s][rule],
                                  simulate(runs[s]["exhaustive"], rule, default, configs, args.folds)) for s in runs]
        report[rule] = summarize(compared[rule])
    report["targets"] = [{"target": n, "pass": ok, "detail": d} for n, ok, d in targets(work, report, target_rules)]
    return report, compared, runs


def parse_args(argv):
    parser = new_parser(__doc__, "both workloads (digits 12 and auc 6 configurations) x 5 folds x 6 epochs, 1 seed, "
                                 "exhaustive + the default rule + paired+curve")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {list(WORKLOADS)}")
    parser.add_argument("--rules", default=None,
                        help="comma-separated racing rules besides exhaustive: forgiving, paired, ttest, aggressive, "
                             "or '<rule>+curve' for fold_stopping='paired_curve' too (default: "
                             f"{','.join(DEFAULT_RULES)} and Search's default; with --quick {','.join(QUICK_RULES)} "
                             "and Search's default)")
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds 0..N-1 (default {DEFAULT_SEEDS}; 1 with --quick)")
    parser.add_argument("--configs", type=int, default=None,
                        help="configurations per run, every workload (default digits 30, auc 16; 12 and 6 with --quick)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fold, every workload (default 20; 6 "
                                                                 "with --quick)")
    parser.add_argument("--folds", type=int, default=FOLDS, help=f"CV folds (default {FOLDS})")
    parser.add_argument("--verbose", action="store_true", help="forward the Ray workers' logs (to stderr)")
    args = parser.parse_args(argv)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not workloads or any(w not in WORKLOADS for w in workloads):
        parser.error(f"--workloads: expected some of {list(WORKLOADS)}, got {args.workloads!r}")
    args.workloads = workloads
    args.seeds = args.seeds if args.seeds is not None else (1 if args.quick else DEFAULT_SEEDS)
    args.configs_of = {w: args.configs or (WORKLOADS[w].quick_configs if args.quick else WORKLOADS[w].configs)
                       for w in workloads}
    args.epochs_of = {w: args.epochs or (WORKLOADS[w].quick_epochs if args.quick else WORKLOADS[w].epochs)
                      for w in workloads}
    if args.seeds < 1 or min(args.configs_of.values()) < 1 or min(args.epochs_of.values()) < 1 or args.folds < 2:
        parser.error("expected --seeds, --configs, --epochs >= 1 and --folds >= 2")
    return parser, args


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    out = claim_stdout()
    default = search_default()
    if args.rules is None:
        base = QUICK_RULES if args.quick else DEFAULT_RULES
        rules = [default[0], *base] if default[0] != "exhaustive" else list(base)
    else:
        rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    rules = list(dict.fromkeys(r for r in rules if r != "exhaustive"))
    known = racing_names()

    def unknown(rule: str) -> bool:
        try:
            return rule != default[0] and (rule_spec(rule, default)[0] or "none") not in [*known, "none"]
        except ValueError:
            return True

    bad = [r for r in rules if unknown(r)]
    if bad:
        parser.error(f"--rules: unknown {bad}; expected names of {known}, each optionally with '+curve'")
    missing = check_interface(rules, default)
    if missing:
        log("glimr_cv lacks what this benchmark needs:\n  " + "\n  ".join(missing))
        return 2
    target_rules = list(dict.fromkeys(r for r in (default[0], "paired+curve") if r in rules))
    log(f"Search() default: racing={default[1]!r}, fold_stopping={default[2]!r} -> rule {default[0]!r}; "
        f"rules {rules}; targets checked for {target_rules}")

    started = time.perf_counter()
    report = {"default_rule": default[0], "default": {"racing": repr(default[1]), "fold_stopping": repr(default[2])},
              "workloads": args.workloads, "rules": rules, "quick": bool(args.quick), "seeds": args.seeds}
    details = {}
    with ray_session("glimr_racing_bench_", keep=args.keep, verbose=args.verbose) as session:
        for i, name in enumerate(args.workloads):
            result, compared, runs = run_workload(WORKLOADS[name], rules, default, target_rules, args, session.root,
                                                  warm_up=i == 0)
            report[name] = result
            details[name] = {"runs": runs, "compared": compared}
    total = time.perf_counter() - started
    report["total_seconds"] = total
    report["targets"] = [t for name in args.workloads for t in report[name]["targets"]]
    report["versions"] = versions()

    text = [f"Fold racing vs exhaustive CV (default rule of Search(): {default[0]}; total {total:.0f} s)", ""]
    for name in args.workloads:
        report[name]["_compared"] = details[name]["compared"]  # for the text only
        text += format_workload(report[name]) + [""]
        del report[name]["_compared"]
    emit(out, args, report, "\n".join(text).rstrip(), details=details)
    log(f"total {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
