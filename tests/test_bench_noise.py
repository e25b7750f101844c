"""bench/noise.py --quick runs against a real archive with recorded runs, so the script cannot rot."""

import subprocess
import sys
from pathlib import Path

from repo_copy import make_repo
from test_plot import record_seeds

BENCH = Path(__file__).resolve().parents[1] / "bench" / "noise.py"


def test_noise_quick_reports_sd_and_detectable_effect(tmp_path):
    root = make_repo(tmp_path)
    record_seeds(root, "grugformer-starter", 0.014, seeds=4, offsets=[0.01, -0.02, 0.015, -0.005])
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--archive", str(root / "archive.yaml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "grugformer-starter: 4 usable runs at 200 steps" in done.stdout
    val_bpb = next(line for line in done.stdout.splitlines() if line.startswith("| val_bpb |"))
    cells = [cell.strip() for cell in val_bpb.strip("|").split("|")]
    assert cells[1] == "4" and float(cells[3]) > 0 and cells[-1].endswith("%")
