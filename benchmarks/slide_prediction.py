#!/usr/bin/env python
"""Memory and time of ``predict_slides`` in this process as the cohort grows.

Workload
    Synthetic cohorts (``glimr_cv.mil.synthetic_slides``, HDF5) of ``--slides``
    sizes, each slide ``--tiles`` tiles of ``--width`` float32 features, written
    under the temp folder and removed afterwards. An untrained attention-MIL
    model (Dense 8, attention pooling, one output) predicts every slide,
    ``--batch-size`` slides at a time.

Method
    Each cohort size runs in a fresh Python process, so that its peak resident
    memory (``ru_maxrss``) is its own. The figure is the peak growth over the
    process's resident memory once TensorFlow, the model and a first 1-slide
    prediction are in place: what predicting the cohort itself adds.

Target
    The peak growth stays about the same as the cohort grows (it follows
    ``--batch-size`` slides, not the cohort): at most 1.5x from the smallest to
    the largest cohort. Before 2026-12-06 the in-process path read every slide
    first, and the growth rose with the cohort (+501 MiB for 234 MiB of features).

Command
    python benchmarks/slide_prediction.py            # 16, 64 and 256 slides of 2,000 x 512
    python benchmarks/slide_prediction.py --quick    # 8 and 32 slides
    python benchmarks/slide_prediction.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def _child(folder: str, slides: int, tiles: int, width: int, batch_size: int) -> dict:
    import keras

    from glimr_cv.mil import bag_pooling, predict_slides, synthetic_slides

    cohort = synthetic_slides(folder, patients=slides, slides_per_patient=(1, 1), tiles=(tiles, tiles), width=width,
                              seed=1)
    instances = keras.Input((None, width), name="instances")
    mask = keras.Input((None,), dtype="bool", name="mask")
    pooled = bag_pooling("attention", units=8)(keras.layers.Dense(8)(instances), mask=mask)
    model = keras.Model({"instances": instances, "mask": mask}, keras.layers.Dense(1)(pooled))
    predict_slides(model, cohort.iloc[:1])  # TensorFlow's own first-call memory, not the cohort's
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    clock = time.perf_counter()
    out = predict_slides(model, cohort, batch_size=batch_size)
    seconds = time.perf_counter() - clock
    assert len(out) == slides
    return {"slides": slides, "features_mib": slides * tiles * width * 4 / 2**20, "base_rss_mib": base,
            "peak_growth_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base,
            "seconds": seconds, "slides_per_second": slides / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slides", type=int, nargs="+", default=None, help="cohort sizes (default 16 64 256)")
    parser.add_argument("--tiles", type=int, default=2000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="8 and 32 slides")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--_child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        folder, *numbers = args._child
        print(json.dumps(_child(folder, *map(int, numbers))))
        return 0
    sizes = args.slides or ([8, 32] if args.quick else [16, 64, 256])
    rows = []
    root = tempfile.mkdtemp(prefix="glimr_cv_slide_prediction_")
    try:
        for n in sizes:
            folder = os.path.join(root, str(n))
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            done = subprocess.run([sys.executable, __file__, "--_child", folder, str(n), str(args.tiles),
                                   str(args.width), str(args.batch_size)], capture_output=True, text=True, env=env)
            if done.returncode:
                sys.stderr.write(done.stderr[-3000:])
                return done.returncode
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratio = rows[-1]["peak_growth_mib"] / max(rows[0]["peak_growth_mib"], 1.0)
    result = {"tiles": args.tiles, "width": args.width, "batch_size": args.batch_size, "runs": rows,
              "growth_ratio_largest_to_smallest": ratio, "target_met": ratio <= 1.5}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"predict_slides in this process: {args.tiles} tiles x {args.width} features per slide, "
          f"{args.batch_size} slides per batch")
    print(f"{'slides':>7} {'features MiB':>13} {'peak growth MiB':>16} {'seconds':>8} {'slides/s':>9}")
    for r in rows:
        print(f"{r['slides']:>7} {r['features_mib']:>13.0f} {r['peak_growth_mib']:>16.0f} {r['seconds']:>8.1f} "
              f"{r['slides_per_second']:>9.1f}")
    print(f"peak growth, largest cohort / smallest: {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
