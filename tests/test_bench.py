"""Every benchmark's --quick mode runs to the end and prints its figures (the numbers themselves are
measured by hand and kept in bench/README.md; here they only have to be there and be finite)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"
SLOW = pytest.mark.slow  # each trains, compiles or starts Ray for several seconds or more


def run_quick(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / name), "--quick"], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(
    "name, expected",
    [
        pytest.param(
            "train_step.py",
            [r"bf16 matrix units: ", rf"grug_core bf16 {NUMBER} tok/s, fp32 {NUMBER} tok/s"],
            marks=SLOW,
        ),
        pytest.param(
            "mesh.py",
            [rf"1 device \(data=1,model=1\): {NUMBER} tok/s", rf"4x2 \(data=4,model=2\): {NUMBER}"],
            marks=SLOW,
        ),
        pytest.param(
            "ray_runs.py",
            [rf"sequential \(grugctl run\): {NUMBER} s", rf"overhead [+-]{NUMBER} s a task"],
            marks=SLOW,
        ),
        pytest.param("loss.py", [rf"fused: temp memory +{NUMBER} MiB, time +{NUMBER} s"], marks=SLOW),
        pytest.param(
            "baseline.py",
            [rf"grugformer starter: .*final val_bpb {NUMBER}", rf"nanoGPT baseline: .*{NUMBER}"],
            marks=SLOW,
        ),
        pytest.param(
            "cli.py",
            [
                rf"archive status +median +{NUMBER} s",
                rf"read: .*\({NUMBER}x\)",
                rf"write: .*\({NUMBER}x\)",
                *(
                    rf"grugctl {name} \(one experiment\) +median +{NUMBER} s"
                    for name in ("new", "diff", "delete")
                ),
            ],
            marks=SLOW,
        ),
        pytest.param(
            "checkpoint.py",
            [rf"overhead at a save every 100 steps: {NUMBER}% of training time", rf"resume .*: {NUMBER} s"],
            marks=SLOW,
        ),
        ("check.py", [rf"check --fast, cold caches +median +{NUMBER} s", r"check --fast, warm +median"]),
        (
            "report.py",
            [rf"per experiment: {NUMBER} s \({NUMBER}x one plot", r"same bytes on a second build: yes"],
        ),
        pytest.param("loop.py", [rf"3xs +{NUMBER} +{NUMBER} +{NUMBER}x  identical"], marks=SLOW),
        (
            "loader.py",
            [rf"token shards: {NUMBER} tokens/s made", rf"prefetched: {NUMBER}% of the loop waiting"],
        ),
        pytest.param(
            "ladder.py",
            [rf"\| xs \| {NUMBER}e\+12 \| {NUMBER} \|", rf"--sizes xs,s --seeds 3 --paired: {NUMBER} min"],
            marks=SLOW,
        ),
    ],
)
def test_quick_mode_prints_its_figures(name, expected):
    output = run_quick(name)
    for pattern in expected:
        assert re.search(pattern, output), output
