"""Wall time of a whole recipe from a fresh run store: `compare --executor serial` vs `--executor local --jobs N`.

Each is a separate `python -m prunectl compare RECIPE` process on its own empty run store (so nothing comes from
the store), run one after the other; the load average before each is printed too, because on a shared 2-core box
other work moves these figures. The local executor's goal on 2 cores: at most 0.75 × the serial time.

Serial runs twice: as a user runs it (torch's default threads: one per core) and with one thread
(OMP_NUM_THREADS=1). The second isolates what the N workers gain from running N runs at once, from what they gain
by not oversubscribing the cores when something else is running too (OpenMP's threads then wait on each other).

    python benchmarks/bench_executor.py [--recipe quick] [--jobs 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load() -> float:
    return os.getloadavg()[0]


def timed_compare(recipe: str, executor_args: list[str], home: Path, threads: int | None = None) -> dict[str, object]:
    env = dict(os.environ, PRUNECTL_HOME=str(home))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    before = load()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "prunectl", "compare", recipe, "--json", *executor_args],
                          env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"compare {' '.join(executor_args) or '(serial)'} failed:\n{done.stderr}")
    runs = sorted(p.name for p in (home / "runs").iterdir())
    return {"seconds": round(seconds, 1), "load_before": round(before, 2), "load_after": round(load(), 2),
            "runs": runs, "report": json.loads(done.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="quick")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp:
        serial = timed_compare(args.recipe, [], Path(tmp) / "serial")
        serial_1 = timed_compare(args.recipe, [], Path(tmp) / "serial-1", threads=1)
        local = timed_compare(args.recipe, ["--executor", "local", "--jobs", str(args.jobs)], Path(tmp) / "local")
    rows = {"serial": serial, "serial, 1 thread": serial_1, f"local --jobs {args.jobs}": local}
    ratio = float(local["seconds"]) / float(serial["seconds"])  # type: ignore[arg-type]
    ratio_1 = float(local["seconds"]) / float(serial_1["seconds"])  # type: ignore[arg-type]
    result = {"recipe": args.recipe, "cpus": len(os.sched_getaffinity(0)), "jobs": args.jobs,
              "rows": {name: {k: v for k, v in row.items() if k not in ("runs", "report")}
                       for name, row in rows.items()},
              "ratio": round(ratio, 3), "ratio_vs_one_thread": round(ratio_1, 3), "goal": 0.75,
              "same_run_ids": serial["runs"] == serial_1["runs"] == local["runs"],
              "runs": len(serial["runs"])}  # type: ignore[arg-type]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"recipe {args.recipe}: {result['runs']} runs, {result['cpus']} CPUs")
    print(f"{'executor':<22}{'wall s':>8}{'load before':>13}{'load after':>12}")
    for name, row in rows.items():
        print(f"{name:<22}{row['seconds']:>8}{row['load_before']:>13}{row['load_after']:>12}")
    print(f"local / serial = {ratio:.2f} (goal <= 0.75); local / serial with 1 thread = {ratio_1:.2f}; "
          f"same run ids: {result['same_run_ids']}")


if __name__ == "__main__":
    main()
