#!/usr/bin/env python
"""Fold racing versus exhaustive cross-validation, on the same configurations and folds.

Workload
    scikit-learn's bundled ``digits`` (1797 rows, 64 features, 10 classes; no
    network). A stratified 25% test split (``random_state=0``, 450 rows) is kept
    outside cross-validation; the remaining 1347 rows are split by
    ``StratifiedKFold(5, shuffle=True, random_state=0)``, so fold ``i`` is the
    same rows on every call. The model is the small Keras MLP of
    :func:`glimr_cv.demo.builder` (1-2 dense layers + dropout + softmax). The
    search space is built so that configurations differ a lot in quality::

        units {16, 32, 64, 128}, layers [1, 2], dropout [0.0, 0.5, step 0.1],
        activation {relu, tanh}, method {sgd, rms, adam},
        learning_rate loguniform(1e-4, 1e-1), batch_size {32, 64}, epochs 6

    (``sgd`` at 1e-4 learns next to nothing in 6 epochs; ``adam`` at 1e-2 reaches
    ~97% validation accuracy). The metric is validation ``digit_accuracy``.

Method
    For each seed (0, 1, 2 by default) the same ``Search(..., seed=seed)`` is run
    with ``num_samples = --configs`` four times: exhaustive CV (``racing=None``)
    and each racing rule (``"forgiving"``, ``"aggressive"``, ``"paired"``). The
    seed fixes configuration ``i`` and the Keras initialisation of every
    (configuration, fold), so the four runs see the same configurations and
    (nearly) the same fold scores; the script checks both. Ray is started once
    with ``num_cpus=2`` (two worker slots, one fold training each); every run
    writes to its own experiment directory under one temporary folder. The order
    of the four runs is rotated from seed to seed, and an untimed warm-up run
    comes first, so a slow start or a drift in machine load does not always hit
    the same rule.

    Per run the script records the fold trainings started
    (``results.fold_trainings``), the wall time of ``experiment()``, the selected
    configuration (``results.best_config_id``), its CV mean and its held-out test
    accuracy: the accuracy of the average predicted probabilities of the selected
    configuration's fold models (``results.best_models()``), computed in the driver.

    Each rule is compared with exhaustive CV on the same seed:

    * ``fold_trainings_fraction`` = rule fold trainings / exhaustive fold trainings
    * ``wall_fraction`` = rule wall time / exhaustive wall time
    * ``same_winner``: the rule selected the same config_id
    * ``cv_mean_gap`` = exhaustive winner's CV mean - rule winner's CV mean, both
      taken from the *exhaustive* table (full 5-fold means), so ``>= 0``; accuracy units
    * ``test_score_gap`` = exhaustive winner's test accuracy - rule winner's
    * "within tolerance": same winner, or ``cv_mean_gap <= 0.002`` (0.2 pp)

    * ``trial_seconds_fraction``: the same ratio of the time spent inside trials,
      the sum over fold rows of ``ended_at - started_at`` (the fold profile of
      ``results.folds``: from the trial's start to its final report)

    As a diagnostic the script also replays the exhaustive run's fold scores (and
    fit seconds as fold durations) through a :class:`glimr_cv.FoldScheduler` with
    each rule, offline, with :class:`glimr_cv.engine.replay.Replay` (two slots and
    Ray Tune's one pending trial): ``simulated_fold_trainings_fraction`` is what the
    scheduler would spend given exactly those scores.

    Set-up, output and the workload are shared with the other benchmarks
    (``benchmarks/harness.py``); only glimr_cv's public API is used.

    Quote the ratios, not absolute times: the machine may be shared and noisy.

Targets (printed as PASS/FAIL lines, for the "forgiving" rule)
    * fold trainings <= 35% of exhaustive (mean over seeds);
    * wall fraction close to the fold fraction: within 10 percentage points;
    * same winner, or within 0.2 pp CV mean, on >= 90% of seeds.

How to run (from the repository root)::

    .venv/bin/python benchmarks/racing.py [--quick] [--json]

``--quick``: 12 configurations x 5 folds x 3 epochs, 1 seed, exhaustive and
"forgiving" only (measured 1.5 minutes on a quiet 2-core machine and 5.5 minutes
when other jobs kept the load average near 7; add ``--rules
forgiving,aggressive,paired`` for all rules, about twice as long). The full run
(30 x 5 x 6 epochs, 3 seeds, all rules) took 11 minutes on a lightly loaded 2-core
machine (33-54 minutes on a busy one before workers reused their models). ``--seeds N``,
``--configs N``, ``--epochs N`` override the workload; ``--rules`` picks rules; ``--details FILE`` writes every run's raw
figures (fold scores, statuses) as JSON; ``--keep`` keeps the experiment
directories. With ``--json`` exactly one JSON object is printed to stdout and
everything else goes to stderr. The exit status is 0 whatever the targets say.
"""

from __future__ import annotations

import collections
import math
import os
import statistics
import sys
import time

import numpy as np

from harness import (FOLDS, METRIC, SLOTS, TEST_SIZE, claim_stdout, emit, heldout_arrays, heldout_loader, log,
                     make_space, new_parser, ray_session, remove_experiment, replay_fold_trainings, run_search,
                     target_lines, versions)

RULES = ("forgiving", "aggressive", "paired")
TOLERANCE = 0.002  # 0.2 percentage points of accuracy

TARGET_FOLD_FRACTION = 0.35
TARGET_WALL_CLOSENESS = 0.10
TARGET_WITHIN_TOLERANCE = 0.90


# -- one run -------------------------------------------------------------------------------------------
def test_accuracy(results, x_test, y_test) -> float:
    """Accuracy of the mean predicted probabilities of the selected configuration's fold models."""
    import keras

    models = results.best_models()
    if not models:
        return math.nan
    probs = []
    for model in models:
        out = model(x_test, training=False)
        probs.append(np.asarray(out["digit"] if isinstance(out, dict) else out))
    del models
    keras.backend.clear_session()
    return float((np.mean(probs, axis=0).argmax(axis=1) == y_test).mean())


def new_search(rule: str | None, seed: int, epochs: int, folds: int):
    """The racing workload's Search: the wide digits space, the demo MLP, held-out-split folds."""
    from glimr_cv import Search
    from glimr_cv.demo import builder

    return Search(make_space(epochs, wide=True), builder, heldout_loader, metric=METRIC, mode="max", cv_folds=folds,
                  seed=seed, racing=rule)


def run_one(rule: str | None, seed: int, args, root: str, x_test, y_test) -> dict:
    name = f"seed{seed}_{rule or 'exhaustive'}"
    load_before = os.getloadavg()[0]
    run = run_search(new_search(rule, seed, args.epochs, args.folds), root, name, num_samples=args.configs)
    results, wall = run.results, run.wall_seconds
    load_after = os.getloadavg()[0]

    table = results.table.set_index("config_id")
    folds = results.folds
    done = folds[folds["status"] == "complete"]
    # time each fold training spent inside its trial (model build, data, fit, checkpoint), from the fold profile
    trial_seconds = float((folds["ended_at"] - folds["started_at"]).sum())
    best = results.best_config_id
    statuses = collections.Counter(table["status"])
    pruned = table[table["status"] == "pruned"]
    record = {
        "rule": rule or "exhaustive",
        "seed": seed,
        "fold_trainings": int(results.fold_trainings),
        "fold_trainings_saved": int(results.fold_trainings_saved),
        "wall_seconds": wall,
        "fit_seconds": float(done["fit_seconds"].sum()),
        "trial_seconds": trial_seconds,
        "utilisation": trial_seconds / (SLOTS * wall),
        "load_average": [load_before, load_after],
        "best_config_id": best,
        "cv_mean": float(table.loc[best, f"mean_{METRIC}"]) if best is not None else math.nan,
        "test_score": test_accuracy(results, x_test, y_test) if best is not None else math.nan,
        "statuses": dict(statuses),
        # finished folds of each pruned configuration -> how many configurations
        "pruned_after_folds": {str(k): int(v) for k, v in sorted(collections.Counter(pruned["folds_done"]).items())},
        "fold_scores": {f"{int(r.config_id)}/{int(r.fold)}": float(getattr(r, METRIC)) for r in done.itertuples()},
        "fold_seconds": {f"{int(r.config_id)}/{int(r.fold)}": float(r.fit_seconds) for r in done.itertuples()},
        "failed_folds": [f"{int(r.config_id)}/{int(r.fold)}" for r in folds[folds["status"] != "complete"].itertuples()],
        "means": {int(c): float(m) for c, m in table[f"mean_{METRIC}"].items()},
        "folds_done": {int(c): int(n) for c, n in table["folds_done"].items()},
        "status_of": {int(c): s for c, s in table["status"].items()},
        "configs": {int(c): p for c, p in results.configs.items()},
    }
    log(f"  {record['rule']:<10} seed {seed}: {record['fold_trainings']:>4} fold trainings, "
        f"{wall:7.1f} s, winner {best} (CV {record['cv_mean']:.4f}, test {record['test_score']:.4f}), "
        f"statuses {dict(statuses)}, slot utilisation {record['utilisation']:.0%}, "
        f"1-min load average {load_before:.1f} -> {load_after:.1f}")
    remove_experiment(root, name, args.keep)
    return record


def by_fold(figures: dict) -> dict:
    """``{"c/f": x}`` (the records' JSON-friendly keys) as ``{(c, f): x}``."""
    return {tuple(int(i) for i in key.split("/")): value for key, value in figures.items()}


# -- comparison ------------------------------------------------------------------------------------------
def compare(ex: dict, run: dict, n_configs: int, n_folds: int) -> dict:
    ex_means = ex["means"]
    ex_best, best = ex["best_config_id"], run["best_config_id"]
    gap = ex_means[ex_best] - ex_means[best] if best is not None else math.nan
    shared = [k for k in run["fold_scores"] if k in ex["fold_scores"]]
    diffs = [abs(run["fold_scores"][k] - ex["fold_scores"][k]) for k in shared]
    same_configs = all(run["configs"][c] == ex["configs"].get(c) for c in run["configs"])
    return {
        "seed": run["seed"],
        "fold_trainings": run["fold_trainings"],
        "fold_trainings_fraction": run["fold_trainings"] / ex["fold_trainings"],
        "wall_fraction": run["wall_seconds"] / ex["wall_seconds"],
        "fit_seconds_fraction": run["fit_seconds"] / ex["fit_seconds"],
        "trial_seconds_fraction": run["trial_seconds"] / ex["trial_seconds"],
        "utilisation": run["utilisation"],
        "load_average": run["load_average"],
        "simulated_fold_trainings_fraction": replay_fold_trainings(
            run["rule"], by_fold(ex["fold_scores"]), by_fold(ex["fold_seconds"]), n_configs, n_folds
        ) / ex["fold_trainings"],
        "best_config_id": best,
        "exhaustive_best_config_id": ex_best,
        "same_winner": best == ex_best,
        "cv_mean_gap": gap,
        "within_tolerance": bool(best == ex_best or (not math.isnan(gap) and gap <= TOLERANCE)),
        "test_score": run["test_score"],
        "test_score_gap": ex["test_score"] - run["test_score"],
        "rule_winner_rank_in_exhaustive": (1 + sum(m > ex_means[best] for c, m in ex_means.items()
                                                   if ex["status_of"][c] == "complete")) if best is not None else None,
        "statuses": run["statuses"],
        "pruned_after_folds": run["pruned_after_folds"],
        "same_configurations": same_configs,
        "shared_fold_scores": len(shared),
        "max_fold_score_diff": max(diffs) if diffs else 0.0,
    }


def mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(values) if values else math.nan


def summarize(rule: str, per_seed: list[dict]) -> dict:
    return {
        "fold_trainings": mean(p["fold_trainings"] for p in per_seed),
        "fold_trainings_fraction": mean(p["fold_trainings_fraction"] for p in per_seed),
        "wall_fraction": mean(p["wall_fraction"] for p in per_seed),
        "same_winner_rate": mean(float(p["same_winner"]) for p in per_seed),
        "within_tolerance_rate": mean(float(p["within_tolerance"]) for p in per_seed),
        "cv_mean_gap": mean(p["cv_mean_gap"] for p in per_seed),
        "test_score_gap": mean(p["test_score_gap"] for p in per_seed),
        "fit_seconds_fraction": mean(p["fit_seconds_fraction"] for p in per_seed),
        "trial_seconds_fraction": mean(p["trial_seconds_fraction"] for p in per_seed),
        "simulated_fold_trainings_fraction": mean(p["simulated_fold_trainings_fraction"] for p in per_seed),
        "per_seed": per_seed,
    }


def targets(report: dict) -> list[tuple[str, bool, str]]:
    f = report.get("forgiving")
    if f is None:
        return []
    frac, wall, tol = f["fold_trainings_fraction"], f["wall_fraction"], f["within_tolerance_rate"]
    return [
        ("forgiving fold trainings <= 35% of exhaustive", frac <= TARGET_FOLD_FRACTION,
         f"{frac:.1%} (per seed: " + ", ".join(f"{p['fold_trainings_fraction']:.1%}" for p in f["per_seed"]) + ")"),
        ("forgiving wall fraction within 10 pp of its fold fraction", abs(wall - frac) <= TARGET_WALL_CLOSENESS,
         f"wall {wall:.1%} vs folds {frac:.1%} (time-inside-trials fraction {f['trial_seconds_fraction']:.1%})"),
        ("forgiving same winner or within 0.2 pp CV mean on >= 90% of seeds", tol >= TARGET_WITHIN_TOLERANCE,
         f"{tol:.0%} of {len(f['per_seed'])} seed(s); same winner on {f['same_winner_rate']:.0%}"),
    ]


def pp(x: float) -> str:
    return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+6.2f}"


def format_report(report: dict) -> str:
    w, ex = report["workload"], report["exhaustive"]
    lines = [
        f"Fold racing vs exhaustive CV: {w['configs']} configurations x {w['folds']} folds x {w['epochs']} epochs, "
        f"seeds {w['seeds']}, {w['slots']} worker slots ({w['dataset']})",
        f"exhaustive: {ex['fold_trainings']:.0f} fold trainings, winner CV mean {ex['cv_mean']:.4f}, "
        f"winner test accuracy {ex['test_score']:.4f} (means over seeds; wall times are not quoted, see ratios)",
        "",
        f"{'rule':<11}{'folds':>7}{'fold frac':>11}{'wall frac':>11}{'trial frac':>11}{'sim frac':>10}"
        f"{'same win':>10}{'within tol':>12}{'CV gap pp':>11}{'test gap pp':>13}",
    ]
    for rule in report["rules"]:
        r = report[rule]
        lines.append(f"{rule:<11}{r['fold_trainings']:>7.1f}{r['fold_trainings_fraction']:>11.3f}"
                     f"{r['wall_fraction']:>11.3f}{r['trial_seconds_fraction']:>11.3f}"
                     f"{r['simulated_fold_trainings_fraction']:>10.3f}{r['same_winner_rate']:>10.0%}"
                     f"{r['within_tolerance_rate']:>12.0%}{pp(r['cv_mean_gap']):>11}{pp(r['test_score_gap']):>13}")
    lines += ["(fractions are rule / exhaustive on the same seed, averaged over seeds: fold trainings started, wall time "
              "of experiment(), time spent inside Tune trials; 'sim frac' replays the exhaustive fold scores through "
              "FoldScheduler offline; gaps are exhaustive winner minus rule winner, CV means from the exhaustive table)",
              "", "per seed:"]
    for rule in report["rules"]:
        for p in report[rule]["per_seed"]:
            lines.append(
                f"  {rule:<10} seed {p['seed']}: folds {p['fold_trainings']:>3} ({p['fold_trainings_fraction']:.3f}), "
                f"wall {p['wall_fraction']:.3f}, winner {p['best_config_id']} vs {p['exhaustive_best_config_id']} "
                f"(rank {p['rule_winner_rank_in_exhaustive']} in exhaustive), CV gap {pp(p['cv_mean_gap']).strip()} pp, "
                f"test gap {pp(p['test_score_gap']).strip()} pp, pruned after n folds {p['pruned_after_folds']}, "
                f"max |fold score diff| {p['max_fold_score_diff']:.4f} over {p['shared_fold_scores']}"
                + ("" if p["same_configurations"] else "  !! configurations differ from exhaustive"))
    lines.append("slot utilisation = time inside Tune trials / (slots x wall), per run: exhaustive "
                 + ", ".join(f"{u:.0%}" for u in ex["utilisation_per_seed"]) + "; "
                 + "; ".join(f"{rule} " + ", ".join(f"{p['utilisation']:.0%}" for p in report[rule]["per_seed"])
                             for rule in report["rules"]))
    lines.append("")
    lines += target_lines(targets(report))
    return "\n".join(lines)


def exhaustive_diagnostics(ex: dict, n_folds: int) -> str:
    """The exhaustive leaderboard's top, to see why racing keeps or drops configurations."""
    means = ex["means"]
    order = sorted((c for c in means if ex["status_of"][c] == "complete"), key=lambda c: -means[c])
    best = order[0]
    worst_fold = min(ex["fold_scores"][f"{best}/{f}"] for f in range(n_folds))
    above = [c for c in order if means[c] >= worst_fold]
    lines = [f"  exhaustive seed {ex['seed']}: winner {best} mean {means[best]:.4f}, worst fold {worst_fold:.4f}; "
             f"{len(above)}/{len(means)} configurations have a full mean >= the winner's worst fold; "
             f"means: " + " ".join(f"{means[c]:.3f}" for c in order)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = new_parser(__doc__, "12 configs x 5 folds x 3 epochs, 1 seed, exhaustive + forgiving only")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3; 1 with --quick)")
    parser.add_argument("--configs", type=int, default=None, help="configurations per run (default 30; 12 with --quick)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fold (default 6; 3 with --quick)")
    parser.add_argument("--folds", type=int, default=FOLDS, help=f"CV folds (default {FOLDS})")
    parser.add_argument("--rules", default=None,
                        help="comma-separated racing rules (default: all three; forgiving with --quick)")
    parser.add_argument("--verbose", action="store_true", help="forward the Ray workers' logs (to stderr)")
    args = parser.parse_args(argv)
    args.seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    args.configs = args.configs if args.configs is not None else (12 if args.quick else 30)
    args.epochs = args.epochs if args.epochs is not None else (3 if args.quick else 6)
    if args.rules is None:
        args.rules = "forgiving" if args.quick else ",".join(RULES)
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    bad = [r for r in rules if r not in RULES]
    if bad or args.seeds < 1 or args.configs < 1 or args.epochs < 1 or args.folds < 2:
        parser.error(f"bad arguments (unknown rules {bad}?)")

    out = claim_stdout()
    started = time.perf_counter()
    _, _, x_test, y_test = heldout_arrays()
    with ray_session("glimr_racing_bench_", keep=args.keep, verbose=args.verbose) as session:
        # untimed warm-up: the first experiment of a Ray session pays one-off start-up costs
        run_search(new_search(None, 0, 1, 2), session.root, "warmup", num_samples=1)
        log(f"warm-up done after {time.perf_counter() - started:.0f} s")

        runs: dict[int, dict[str, dict]] = {}
        names = ["exhaustive", *rules]
        for seed in range(args.seeds):
            order = names[seed % len(names):] + names[:seed % len(names)]
            log(f"seed {seed}: order {order}")
            runs[seed] = {}
            for name in order:
                runs[seed][name] = run_one(None if name == "exhaustive" else name, seed, args, session.root,
                                           x_test, y_test)
            log(exhaustive_diagnostics(runs[seed]["exhaustive"], args.folds))
    total = time.perf_counter() - started

    exs = [runs[s]["exhaustive"] for s in runs]
    report = {
        "workload": {
            "dataset": f"sklearn digits, {len(y_test)} test rows held out (stratified {TEST_SIZE:.0%}), "
                       f"{1797 - len(y_test)} CV rows, StratifiedKFold({args.folds}, shuffle, random_state=0)",
            "model": "glimr_cv.demo.builder MLP",
            "configs": args.configs,
            "folds": args.folds,
            "epochs": args.epochs,
            "seeds": list(runs),
            "slots": SLOTS,
            "metric": f"validation {METRIC} (max)",
            "space": "units {16,32,64,128}, layers [1,2], dropout [0,0.5,0.1], activation {relu,tanh}, "
                     "method {sgd,rms,adam}, learning_rate loguniform(1e-4,1e-1), batch_size {32,64}",
            "quick": bool(args.quick),
            "total_seconds": total,
            "versions": versions(),
        },
        "exhaustive": {
            "fold_trainings": mean(e["fold_trainings"] for e in exs),
            "wall_seconds": mean(e["wall_seconds"] for e in exs),
            "fit_seconds": mean(e["fit_seconds"] for e in exs),
            "trial_seconds": mean(e["trial_seconds"] for e in exs),
            "utilisation_per_seed": [e["utilisation"] for e in exs],
            "cv_mean": mean(e["cv_mean"] for e in exs),
            "test_score": mean(e["test_score"] for e in exs),
            "per_seed": [{k: e[k] for k in ("seed", "fold_trainings", "wall_seconds", "best_config_id", "cv_mean",
                                            "test_score", "statuses", "utilisation", "load_average")} for e in exs],
        },
        "rules": rules,
    }
    for rule in rules:
        report[rule] = summarize(rule, [compare(runs[s]["exhaustive"], runs[s][rule], args.configs, args.folds)
                                        for s in runs])
    report["targets"] = [{"target": name, "pass": ok, "detail": detail} for name, ok, detail in targets(report)]
    emit(out, args, report, format_report(report), details={"runs": runs})
    log(f"total {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
