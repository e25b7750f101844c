"""Build time of `grugctl report` per experiment, on N experiments with K seeds each.

Builds a throwaway git repository holding a copy of grug_core and the starter, plus N-1 experiments
copied from the starter (each with its MLP's gate changed, as `grugctl new` + an edit would leave
them), and K synthetic run records per experiment written in the format `grugctl run` writes
(records.build_record, summary_row and the content hash). Times, in this process: the whole site built
in memory (leaderboard, compare tables, curves, diffs, pages), the folder written and swapped in, and
one `grugctl plot` figure for scale (the report draws one per experiment with runs). The target is
well under a second per experiment.

Run: .venv/bin/python bench/report.py [--experiments 40] [--seeds 3] [--quick]
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STARTER = "experiments/speedrun/grugformer_starter/grugformer_speedrun.py"
TARGET_S = 1.0


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def results(seed: int, rate: float, steps: int = 200) -> dict:
    """A finished child's results: a val-bpb curve that decays at `rate` and crosses 2.7."""
    curve = []
    for step in range(25, steps + 1, 25):
        bpb = 2.4 + 3.0 * math.exp(-rate * step) + 0.01 * seed
        point = {"step": step, "tokens": step * 4096, "train_seconds": step * 0.5}
        curve.append(point | {"val_loss": bpb * math.log(2), "val_bpb": bpb})
    crossed = next(p for p in curve if p["val_bpb"] <= 2.7)
    return {
        "seed": seed, "smoke": False, "config": {"steps": steps, "seed": seed}, "steps": steps,
        "tokens": steps * 4096, "compile_seconds": 3.0, "train_seconds": steps * 0.5, "tokens_per_s": 8192.0,
        "mfu": 0.3, "final_train_loss": 1.8, "val_loss": curve[-1]["val_loss"],
        "val_bpb": curve[-1]["val_bpb"], "target_val_bpb": 2.7, "steps_to_target": crossed["step"],
        "tokens_to_target": crossed["tokens"], "time_to_target_s": crossed["train_seconds"], "curve": curve,
        "train_curve": [[s, 2.0] for s in range(1, steps + 1)], "date": "2026-01-01T00:00:00Z",
        "host": {"id": "bench", "cpu": "bench CPU", "cores": 2},
    }  # fmt: skip


def build_repo(root: Path, experiments: int, seeds: int) -> None:
    from grugctl.gitinfo import blob_id
    from grugctl.runs import records

    git(root, "init", "-q")
    git(root, "config", "user.email", "bench@example.com")
    git(root, "config", "user.name", "bench")
    shutil.copytree(REPO / "grug_core", root / "grug_core", ignore=shutil.ignore_patterns("__pycache__"))
    starter = (REPO / STARTER).read_text()
    files = {"grugformer-starter": STARTER}
    for i in range(1, experiments):
        files[f"exp-{i:04d}"] = f"experiments/speedrun/grugformer_exp_{i:04d}/grugformer_exp_{i:04d}.py"
    for entry_id, path in files.items():
        # Every idea changes the MLP's gate: one bucket, as `grugctl new` and an edit would leave it.
        idea = starter.replace("jax.nn.silu(", "jax.nn.gelu(", 1)
        source = starter if entry_id == "grugformer-starter" else idea
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(source)
    (root / "archive.yaml").write_text("version: 1\nexperiments: {}\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "core and experiments")
    head = git(root, "rev-parse", "HEAD")
    lines = ["version: 1", "core: grug_core", "starter: grugformer-starter", "", "experiments:"]
    for number, (entry_id, path) in enumerate(files.items()):
        source = (root / path).read_bytes()
        made = records.Provenance(head, False, blob_id(source), None, None, records.source_code_id(source))
        lines += [f"  {entry_id}:", f"    path: {path}", "    status: active"]
        lines += ["    bucket: mlp" if number else "    bucket: null", f"    purpose: Idea {number}."]
        lines += [f"    base: {head[:12]}", "    results:"]
        for seed in range(seeds):
            record = records.build_record(
                results(seed, 0.014 + 0.0002 * number), made, entry_id=entry_id, pair=f"p{seed}"
            )
            rel = records.record_path(entry_id, seed, when=0)
            data = records.encode(record)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
            row = records.summary_row(record, rel) | {"record_hash": records.content_hash(data)}
            lines.append(f"      - {json_flow(row)}")
    (root / "archive.yaml").write_text("\n".join(lines) + "\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "runs")


def json_flow(row: dict) -> str:
    import json

    return json.dumps(row)  # JSON is YAML: one flow mapping per row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 experiments, 2 seeds: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.experiments, args.seeds = 4, 2
    from grugctl.archive import load_archive
    from grugctl.evidence import plot
    from grugctl.report import site, writer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        root.mkdir()
        build_repo(root, args.experiments, args.seeds)
        archive = load_archive(root / "archive.yaml")
        plot.png(
            plot.load_curves(archive, ["grugformer-starter"], "val_bpb", "step", None), "val_bpb", "step"
        )
        start = time.perf_counter()  # matplotlib and scipy imported above: what is timed is the work
        figure = plot.png(
            plot.load_curves(archive, ["exp-0001", "grugformer-starter"], "val_bpb", "step", None),
            "val_bpb",
            "step",
        )
        one_figure = time.perf_counter() - start
        start = time.perf_counter()
        files = site.build_site(archive)
        built = time.perf_counter() - start
        start = time.perf_counter()
        writer.write_site(files, Path(tmp) / "site")
        written = time.perf_counter() - start
        again = site.build_site(archive)
    per = (built + written) / args.experiments
    size = sum(len(data) for data in files.values())
    print(f"CPU: {cpu_name()}, python {sys.version.split()[0]}")
    print(
        f"site: {args.experiments} experiments x {args.seeds} seeds, {len(files)} files, {size / 1e6:.2f} MB"
    )
    print(f"build in memory: {built:.2f} s, write and swap: {written:.3f} s")
    print(f"per experiment: {per:.3f} s ({per / one_figure:.2f}x one plot figure of {one_figure:.3f} s)")
    print(f"same bytes on a second build: {'yes' if again == files else 'NO'}")
    print(f"per experiment {'meets' if per < TARGET_S else 'MISSES'} the {TARGET_S:.0f} s target")
    assert figure[:8] == b"\x89PNG\r\n\x1a\n"


if __name__ == "__main__":
    main()
