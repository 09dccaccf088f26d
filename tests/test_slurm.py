"""The Slurm executor against a real Slurm cluster (.ci/slurm-up.sh starts a single-node one): a tiny recipe end to
end through job arrays, a second call served from the store, and a cancelled job resumed by the next compare.

Skipped where no cluster answers, unless PRUNECTL_TEST_SLURM=1 says one must (CI), which turns a skip into a failure.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from tinyrecipe import prunectl, write_recipe

from prunectl import paths
from prunectl.errors import EXIT_RUNS_FAILED, ExecutorError
from prunectl.runs import claim


def slurm_problem() -> str | None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install -e '.[slurm]')"
    from prunectl.engine.executors.slurm import check_slurm

    try:
        check_slurm()
    except ExecutorError as err:
        return str(err)
    return None


PROBLEM = slurm_problem()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROBLEM is not None and os.environ.get("PRUNECTL_TEST_SLURM") != "1",
                       reason=f"needs a Slurm cluster ({PROBLEM}); as root, .ci/slurm-up.sh starts a single-node "
                              "one (then set PRUNECTL_TEST_SLURM=1 to make these tests required)"),
]
SLURM = ["--executor", "slurm", "--cpus-per-job", "1", "--time-limit", "15"]


def compare(recipe, *args, timeout=600):
    process = prunectl("compare", str(recipe), *SLURM, *args)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def submitted(home):
    return sorted((home / "executors" / "slurm").rglob("*_submitted.pkl"))


def test_a_tiny_recipe_runs_as_slurm_job_arrays_and_then_comes_from_the_store(tmp_path):
    assert PROBLEM is None, PROBLEM
    recipe = write_recipe(tmp_path / "tiny.toml", seeds=(0,), epochs=1)
    home = tmp_path / "home"
    code, out, err = compare(recipe)  # progress notes on stderr, the table on stdout
    assert code == 0, err
    assert "fine-tuned" in out and "scratch-E" in out
    for wave in ("baselines", "prunes", "arms"):
        assert f"{wave}: " in err and "Slurm job array" in err
    pickles = submitted(home)
    assert len(pickles) == 4  # baseline, prune, two arms: one job each
    assert all(p.stat().st_size < 20_000 for p in pickles)  # argv only: a pickled model would be far larger
    runs = sorted((home / "runs").iterdir())
    assert len(runs) == 4
    for run in runs:
        (attempt,) = claim.attempts(run)
        assert attempt["slurm_job"] and "slurm: " in (run / paths.RUN_LOG).read_text()

    code, again, err = compare(recipe)
    assert code == 0, err
    assert err.count("from the store") == 3 and "Slurm job array" not in err
    assert submitted(home) == pickles  # no job submitted the second time
    assert again == out


def test_a_cancelled_job_fails_its_run_and_the_next_compare_resumes_it(tmp_path):
    assert PROBLEM is None, PROBLEM
    recipe = write_recipe(tmp_path / "tiny.toml", seeds=(0,), epochs=4, arms=("fine-tuned",))
    home = tmp_path / "home"
    process = prunectl("compare", str(recipe), *SLURM, "--json")
    deadline = time.monotonic() + 300
    while True:
        baselines = list((home / "runs").glob("train-*"))
        if baselines and (baselines[0] / paths.CHECKPOINT).is_file() and (baselines[0] / paths.LOCK).is_file():
            break
        assert time.monotonic() < deadline and process.poll() is None, "the baseline never started"
        time.sleep(0.1)
    (victim,) = baselines
    job = claim.read_lock(victim)["slurm_job"]
    subprocess.run(["scancel", job], check=True)  # as a pre-emption without requeue would
    out, err = process.communicate(timeout=300)
    assert process.returncode == EXIT_RUNS_FAILED, err
    last = err.strip().splitlines()[-1]
    assert victim.name in last and str(victim / paths.RUN_LOG) in last and f"Slurm job {job}" in last

    code, out, err = compare(recipe)
    assert code == 0, err
    assert len(claim.attempts(victim)) == 2 and (victim / paths.RESULT).is_file()
