"""bench/fuzz_writes.py --quick: a small fuzz of the write path in the suite, so the script cannot rot
and a regression in any of its figures fails a test."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "fuzz_writes.py"


def test_fuzz_quick_loses_nothing_and_rejects_cleanly():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["concurrent writers"]["lost"] == 0 and report["concurrent writers"]["failed"] == 0
    assert report["concurrent new"]["violations"] == 0
    malformed = report["malformed archives"]
    assert malformed["rejected"] + malformed["valid"] == malformed["tried"] > 0
    assert malformed["traceback"] == malformed["hang"] == malformed["changed"] == malformed["executed"] == 0
    values = report["values"]
    assert values["round-tripped"] + values["refused"] == values["tried"] and values["broken"] == 0
    kills = report["kills mid-write"]
    assert kills["journals"] == kills["recovered"] and kills["invalid"] == 0
