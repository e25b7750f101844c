"""N smoke runs of the starter through `grugctl run --ray` on a local Ray instance against the same N
run sequentially by `grugctl run`, in a throwaway clone of this repository's HEAD.

The per-task overhead is what Ray adds when it runs the same work with the same concurrency: with
--cpus-per-run equal to the machine's cores the tasks run one at a time, like the sequential runs, so
(Ray wall time - sequential wall time) / N is the cost of scheduling, shipping the code, starting
workers and bringing results back. Cluster start-up is timed apart (it is paid once per cluster).
A second Ray pass with one CPU per task shows the wall time when tasks share the machine.

    python bench/ray_runs.py           # 8 runs each way; target: overhead <= 2 s a task
    python bench/ray_runs.py --quick   # 1 run each way, one-at-a-time Ray pass only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRUGCTL = Path(sys.executable).parent / "grugctl"
TARGET_OVERHEAD_S = 2.0


def clone_head(dest: Path) -> Path:
    """The committed tree at HEAD (no history), committed once: what a fresh clone ships."""
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=bench", "-c", "user.email=b@example.com",
                                                 "commit", "-qm", "bench"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=dest, check=True, capture_output=True)
    return dest


def timed_grugctl(root: Path, *args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([str(GRUGCTL), *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"grugctl {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run each way, one Ray pass")
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    cores = os.cpu_count() or 1
    smoke = ["run", "grugformer-starter", "--smoke", "--no-record", "--seeds", str(runs)]

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep the instance on 127.0.0.1
    import ray

    with tempfile.TemporaryDirectory(prefix="grugctl-ray-bench-") as scratch:
        root = clone_head(Path(scratch))
        sequential = timed_grugctl(root, *smoke)
        start = time.perf_counter()
        ray.init(
            address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=cores,
            logging_level="error", log_to_driver=False,
        )  # fmt: skip
        startup = time.perf_counter() - start
        address = ray.get_runtime_context().gcs_address
        on_ray = [*smoke, "--ray-address", address, "--cpus-per-run"]
        try:
            one_at_a_time = timed_grugctl(root, *on_ray, str(cores))
            shared = None if args.quick else timed_grugctl(root, *on_ray, "1")
        finally:
            ray.shutdown()

    overhead = (one_at_a_time - sequential) / runs
    verdict = "PASS" if overhead <= TARGET_OVERHEAD_S else "MISS"
    print(f"{runs} smoke runs of the starter, {cores} CPU cores, ray {ray.__version__}")
    print(f"sequential (grugctl run): {sequential:.1f} s, {sequential / runs:.1f} s a run")
    print(f"local Ray instance start-up: {startup:.1f} s (once per cluster)")
    print(
        f"--ray, one task at a time (--cpus-per-run {cores}): {one_at_a_time:.1f} s; "
        f"overhead {overhead:+.2f} s a task  [{verdict}: target <= {TARGET_OVERHEAD_S} s]"
    )
    if shared is not None:
        speedup = sequential / shared
        print(f"--ray, one CPU a task ({cores} at once): {shared:.1f} s, {speedup:.2f}x sequential")


if __name__ == "__main__":
    main()
