"""Maintainer script: run the quick recipe and ship seed 0's trained models as zoo entries (weights in zoo/weights/).

    python scripts/export_quick_zoo.py [--replace]

Entries: quick-smallcnn-baseline, quick-smallcnn-l1-50 (pruned, not fine-tuned), quick-smallcnn-fine-tuned,
quick-smallcnn-scratch-e, quick-smallcnn-scratch-b. Their measured accuracy is what the run reported.
"""

from __future__ import annotations

import argparse

from prunectl import engine
from prunectl.engine.zoo import export_run

SOURCE = "prunectl quick recipe (zoo/recipes/quick.toml), seed 0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replace", action="store_true", help="overwrite existing entries")
    args = parser.parse_args()
    runs = engine.run_recipe(engine.load_recipe("quick"))
    seed0 = [r for r in runs.arms if r.result()["seed"] == 0]
    by_arm = {r.result()["arm"]: r for r in seed0}
    exports = [
        (runs.baselines[0], "quick-smallcnn-baseline", "smallcnn baseline on mnist5k (8 epochs)", "baseline"),
        (runs.pruned[0], "quick-smallcnn-l1-50", "smallcnn with 50 % of its filters removed by L1 norm, "
                                                 "inherited weights, not fine-tuned", "l1-norm"),
        (by_arm["fine-tuned"], "quick-smallcnn-fine-tuned", "the L1-norm 50 % smallcnn fine-tuned 3 epochs", "l1-norm"),
        (by_arm["scratch-E"], "quick-smallcnn-scratch-e", "the L1-norm 50 % architecture trained from scratch, "
                                                          "baseline's epochs (scratch-E)", "l1-norm"),
        (by_arm["scratch-B"], "quick-smallcnn-scratch-b", "the L1-norm 50 % architecture trained from scratch, "
                                                          "baseline's FLOPs budget (scratch-B)", "l1-norm"),
    ]
    for run, name, description, method in exports:
        entry = export_run(run, name, description=description, method=method, source=SOURCE, replace=args.replace)
        print(f"{entry.name}: {run.path}")


if __name__ == "__main__":
    main()
