"""Krippendorff's alpha (nominal) on 1,000,000 labels: rlhfkit against the `krippendorff`
package, same data, same machine, one run.

The data: 200,000 items x 5 annotators, 4 categories, 10% of the labels missing (labels
agree with a hidden truth 70% of the time, so alpha is neither 0 nor 1). Each tool gets the
data in its own native form and is timed from there: rlhfkit takes the long format a labels
file holds (item, annotator, label columns) and builds its coded `Labels` inside the timed
region; the package takes its reliability matrix (annotators x items, NaN for missing).
Times are the best of `--repeats` runs.

    .venv/bin/python bench/agreement.py

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def data(items: int, annotators: int, categories: int, missing: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, categories, items)
    noise = rng.integers(0, categories, (annotators, items))
    matrix = np.where(rng.random((annotators, items)) < 0.7, truth, noise).astype(float)
    matrix[rng.random(matrix.shape) < missing] = np.nan
    a, u = np.nonzero(~np.isnan(matrix))
    return matrix, (u, a, matrix[a, u])


def best_of(fn, repeats: int) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--annotators", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import krippendorff

    from rlhfkit.agreement import Labels, krippendorff_alpha

    matrix, (item, annotator, label) = data(args.items, args.annotators, 4, 0.10)

    def ours() -> float:
        return krippendorff_alpha(Labels.from_records(item, annotator, label), "nominal")

    def package() -> float:
        return krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")

    ours_s, ours_alpha = best_of(ours, args.repeats)
    pkg_s, pkg_alpha = best_of(package, args.repeats)
    labels = Labels.from_records(item, annotator, label)
    start = time.perf_counter()
    krippendorff_alpha(labels, "nominal")
    alpha_only = time.perf_counter() - start
    print(
        json.dumps(
            {
                "labels": len(label),
                "items": args.items,
                "annotators": args.annotators,
                "categories": 4,
                "missing": 0.10,
                "rlhfkit_alpha": ours_alpha,
                "krippendorff_alpha": pkg_alpha,
                "equal_to_1e-9": abs(ours_alpha - pkg_alpha) < 1e-9,
                "rlhfkit_seconds": ours_s,
                "rlhfkit_seconds_alpha_only": alpha_only,
                "krippendorff_seconds": pkg_s,
                "speedup": pkg_s / ours_s,
                "threads": "numpy defaults",
            }
        )
    )


if __name__ == "__main__":
    main()
