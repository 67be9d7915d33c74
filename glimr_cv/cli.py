"""The ``glimr-cv`` command: ``glimr-cv demo`` and ``glimr-cv resume DIR``."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glimr-cv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="5-fold CV search of a Keras MLP on scikit-learn's digits, on a local Ray")
    demo.add_argument("--dir", default="glimr_cv_results", help="results folder (default: %(default)s)")
    demo.add_argument("--name", default=None, help="experiment name (default: a timestamp)")
    demo.add_argument("--samples", type=int, default=12, help="configurations to try (default: %(default)s)")
    demo.add_argument("--folds", type=int, default=5, help="CV folds (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=None, help="epochs per fold (default: the demo space's)")
    demo.add_argument("--racing", default="forgiving", choices=["forgiving", "aggressive", "paired", "none"])
    resume = sub.add_parser("resume", help="resume an interrupted experiment")
    resume.add_argument("path", help="the experiment directory (local_dir/name)")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run

        run(args.dir, args.name, args.samples, args.folds, None if args.racing == "none" else args.racing, args.epochs)
        return 0
    from .search import Search

    results = Search.restore(args.path)
    print(results.leaderboard())
    print(f"results: {results.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
