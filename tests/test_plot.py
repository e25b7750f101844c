"""`grugctl plot`: real PNG and HTML files drawn from run records written by the same code `run` uses."""

import math

import numpy as np
from matplotlib import image as mpimg
from test_diff import _invoke, make_repo, new_experiment

from grugctl import archive
from grugctl.evidence import plot
from grugctl.runs import records
from grugctl.runs.runner import record_run

STARTER = "grugformer-starter"
IDEA = "relu-squared"


def fake_results(seed: int, rate: float, steps: int = 200, offset: float | None = None) -> dict:
    """A child's results with a val-bpb curve that decays at `rate`, shifted by `offset` (default 0.01 per
    seed), and crosses 2.7 somewhere."""
    offset = 0.01 * seed if offset is None else offset
    curve = []
    for step in range(25, steps + 1, 25):
        bpb = 2.4 + 3.0 * math.exp(-rate * step) + offset
        loss = bpb * math.log(2)
        point = {"step": step, "tokens": step * 4096, "train_seconds": step * 0.5}
        curve.append(point | {"val_loss": loss, "val_bpb": bpb, "train_loss": loss})
    crossed = next(p for p in curve if p["val_bpb"] <= 2.7)
    return {
        "experiment": "x", "seed": seed, "smoke": False, "config": {"steps": steps, "seed": seed},
        "steps": steps, "tokens": steps * 4096, "compile_seconds": 3.0, "train_seconds": steps * 0.5,
        "tokens_per_s": 8192.0, "mfu": 0.3, "final_train_loss": 1.8, "val_loss": curve[-1]["val_loss"],
        "val_bpb": curve[-1]["val_bpb"], "target_val_bpb": 2.7, "steps_to_target": crossed["step"],
        "tokens_to_target": crossed["tokens"], "time_to_target_s": crossed["train_seconds"],
        "curve": curve, "train_curve": [[s, 2.0] for s in range(1, steps + 1)],
        "date": "2026-11-25T00:00:00Z", "host": {"id": "h1"},
    }  # fmt: skip


def record_seeds(root, entry_id, rate, seeds=3, offsets=None):
    """Records and archive rows written by `grugctl run`'s own recording code, paired by seed."""
    loaded = archive.load_archive(root / "archive.yaml")
    entry = loaded.experiments[entry_id]
    source = records.provenance(root, entry.path, loaded.core)
    for seed in range(seeds):
        results = fake_results(seed, rate, offset=None if offsets is None else offsets[seed])
        built = records.build_record(results, source, entry_id=entry_id, pair=f"p-seed{seed}")
        record_run(loaded, entry_id, built)


def test_plot_writes_a_real_png_with_both_curves(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    record_seeds(root, STARTER, 0.014)
    record_seeds(root, IDEA, 0.02)
    out = tmp_path / "curves.png"
    result = _invoke(root, ["plot", IDEA, STARTER, "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    pixels = mpimg.imread(out)[..., :3]
    assert pixels.shape[:2] == (550, 880)
    assert (pixels < 0.95).any(axis=-1).mean() > 0.01  # something other than the white background
    # The default colours of the two curves (C0 blue, C1 orange) are both drawn.
    blue, orange = np.array([0.12, 0.47, 0.71]), np.array([1.0, 0.5, 0.05])
    for colour in (blue, orange):
        assert (np.abs(pixels - colour).max(axis=-1) < 0.08).sum() > 50


def test_html_page_embeds_the_png_and_the_compare_table(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, IDEA, "--bucket", "mlp")
    record_seeds(root, STARTER, 0.014)
    record_seeds(root, IDEA, 0.02)
    out = tmp_path / "curves.html"
    result = _invoke(root, ["plot", IDEA, STARTER, "--out", str(out), "--x", "time"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert 'src="data:image/png;base64,' in page and "<table>" in page
    assert "relu-squared vs grugformer-starter at 200 steps" in page and "<script" not in page


def test_the_mean_curve_and_crossing_over_seeds():
    runs = []
    for seed in range(2):
        results = fake_results(seed, 0.02)
        built = records.build_record(
            results, records.Provenance("c", False, "b" * 40, None, None), entry_id="x", pair=None
        )
        runs.append((records.summary_row(built, "r.json"), built))
    curve = plot.mean_curve("x", runs, "val_bpb", "step")
    assert curve.seeds == 2 and curve.x[0] == 25 and curve.x[-1] == 200
    # Seeds differ by 0.01 everywhere: the mean sits halfway, the band is +- sd = 0.01 / sqrt(2).
    expected = 2.4 + 3.0 * math.exp(-0.02 * 200) + 0.005
    assert math.isclose(curve.mean[-1], expected, rel_tol=1e-4)
    assert math.isclose(curve.high[-1] - curve.mean[-1], 0.01 / math.sqrt(2), rel_tol=1e-3)
    assert curve.crossing == 125 and curve.target == 2.7  # 2.4 + 3 exp(-0.02 s) <= 2.7 from s = 115


def test_plot_without_records_or_with_a_bad_option_is_one_sentence(tmp_path):
    root = make_repo(tmp_path)
    for args, words in [
        (["plot", STARTER], "has no recorded runs of its current code"),
        (["plot", STARTER, "--out", "x.pdf"], "must end in .png or .html"),
        (["plot", STARTER, "--x", "walltime"], "unknown --x 'walltime'"),
    ]:
        result = _invoke(root, args)
        assert result.exit_code == 2 and words in result.output, (args, result.output)
