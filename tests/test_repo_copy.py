"""The newcomer's sequence: the README's command 1 leaves a run record, an archive row (and, later, the
user's own experiments and edits) in the clone; the repositories the suite builds from that clone must
not see any of it, or command 2 fails on what command 1 did."""

import filecmp

from repo_copy import FIXTURE_ARCHIVE, STARTER_DIR, make_repo
from test_diff import _invoke, new_experiment
from test_plot import record_seeds

STARTER = "grugformer-starter"


def test_the_suite_repositories_ignore_what_a_user_ran_recorded_or_left_uncommitted(tmp_path):
    clone = make_repo(tmp_path / "clone")  # stands for the user's clone after command 1 and some work
    record_seeds(clone, STARTER, 0.014, seeds=2)  # command 1 records a starter run (record + row)
    new_experiment(clone, "relu-squared", "--bucket", "mlp")  # their own idea, uncommitted
    (clone / "runs" / ".scratch").mkdir(parents=True)
    (clone / "runs" / ".scratch" / "results.json").write_text("{}")
    assert (clone / "runs" / STARTER).is_dir()

    copy = make_repo(tmp_path / "suite", source=clone)
    assert filecmp.cmp(copy / "archive.yaml", FIXTURE_ARCHIVE, shallow=False)
    assert not (copy / "runs").exists()
    assert sorted(p.name for p in (copy / "experiments" / "speedrun").iterdir()) == [
        STARTER_DIR.rsplit("/")[-1]
    ]
    # What failed for a newcomer: the starter's plot found command 1's record instead of none.
    result = _invoke(copy, ["plot", STARTER])
    assert result.exit_code == 2 and "has no recorded runs of its current code" in result.output
    assert _invoke(copy, ["check", "--fast"]).exit_code == 0
