"""grugctl promote: splicing on synthetic sources, then the command end to end in real temporary git
repositories built from a copy of this repository. One test runs the full gate (every core test and the
starter's smoke run); the others narrow the pytest half with $GRUGCTL_GATE_TESTS to one tiny core test."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import git
import pytest
from foreground import DEFAULT_SIGINT_THEN_GRUGCTL
from repo_copy import commit_all, make_repo
from test_diff import _invoke, edit_definition, experiment_file, starter_file, surface_edit
from test_plot import record_seeds

from grugctl import archive, codediff, splice
from grugctl.promotion import gate, promote

REPO = Path(__file__).resolve().parents[1]
STARTER_ID = "grugformer-starter"
IDEA = "gelu-mlp"
SILU, GELU = "jax.nn.silu(", "jax.nn.gelu("  # the experiments' edit: the MLP's gate activation
FAST_TEST = "tests/test_grugformer_fast_mlp.py"
# These tests are about the mechanics; test_promote_evidence.py covers the results gate itself.
WAIVE = ("--waive", "a test of the promotion mechanics")
FAST_TEST_SOURCE = """\
import jax
import jax.numpy as jnp

from grug_core.model import GrugConfig, init_parameters, mlp

CFG = GrugConfig(
    vocab_size=16, hidden_dim=8, intermediate_dim=16, num_layers=1, num_heads=2, num_kv_heads=1,
    head_dim=4, max_seq_len=8,
)


def test_mlp_keeps_the_shape():
    params = init_parameters(CFG, jax.random.key(0)).blocks[0]
    assert mlp(params, jnp.ones((1, 3, 8))).shape == (1, 3, 8)
"""
# Locks today's SwiGLU behaviour, so splicing a GELU MLP into the core must fail the gate.
PIN_TEST = "tests/test_grugformer_pin_swiglu.py"
PIN_TEST_SOURCE = FAST_TEST_SOURCE.replace("test_mlp_keeps_the_shape", "test_mlp_is_swiglu").replace(
    "    assert mlp(params, jnp.ones((1, 3, 8))).shape == (1, 3, 8)\n",
    "    x = jnp.ones((1, 3, 8))\n"
    "    gate, up = x @ params.w_gate, x @ params.w_up\n"
    "    assert jnp.allclose(mlp(params, x), (jax.nn.silu(gate) * up) @ params.w_down, atol=1e-6)\n",
)


# ---------------------------------------------------------------------------------------------------
# Temporary repositories


def write(root: Path, rel: str, text: str) -> None:
    (root / rel).write_text(text)


def gelu_experiment(root: Path, idea: str = IDEA) -> Path:
    """new → edit mlp (SiLU gate becomes GELU) → commit."""
    result = _invoke(root, ["new", idea, "--bucket", "mlp", "--purpose", "Try a GELU gate in the MLP."])
    assert result.exit_code == 0, result.output
    path = experiment_file(root, idea)
    edit_definition(path, "mlp", SILU, GELU)
    commit_all(root, f"{idea}: GELU gate")
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Hash of every file outside .git: what a refusal or a rollback must leave exactly as it was."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts and not p.name.startswith(".archive")
    }


def git_state(root: Path) -> tuple[str, str, str, str]:
    repo = git.Repo(root)
    branches = " ".join(sorted(h.name for h in repo.heads))
    return repo.head.commit.hexsha, repo.active_branch.name, branches, repo.git.status("--porcelain")


def entry(root: Path, experiment_id: str = IDEA) -> archive.Entry:
    return archive.load_archive(root / "archive.yaml").experiments[experiment_id]


def core_definitions(source: str) -> dict[str, str]:
    return {n: d.fingerprint for n, d in codediff.parse_module(source).definitions.items()}


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@pytest.fixture()
def narrowed(monkeypatch) -> str:
    """The gate's pytest half narrowed to one tiny core test (written into each repository that uses it)."""
    monkeypatch.setenv(gate.GATE_TESTS_ENV, FAST_TEST)
    return FAST_TEST


# ---------------------------------------------------------------------------------------------------
# Splicing, on synthetic sources

CORE_MODEL = '''\
# Axes: M model dim.
"""A tiny core model."""

import math

from core.attention import attention


def rms_norm(x, weight, eps):
    return x * weight / math.sqrt(eps)


# The MLP: two matmuls.
def mlp(params, x):
    return params.w_down @ (params.w_up @ x)


def block(params, x):
    return attention(mlp(params, rms_norm(x, params.norm, 1e-5)))
'''
CORE_ATTENTION = """\
def attention(x):
    return x


def apply_rotary(x):
    return x
"""
EXPERIMENT = '''\
"""An experiment."""

import math

import numpy as np

from core.attention import attention


def rms_norm(x, weight, eps):
    return x * weight / math.sqrt(eps)


# Squared ReLU, as in Primer: cheaper than GELU and as good at this size.
def relu_squared(x):
    return np.maximum(x, 0) ** 2


def apply_rotary(x):
    return x


# The MLP: two matmuls and a squared ReLU between them.
def mlp(params, x):
    return params.w_down @ relu_squared(apply_rotary(params.w_up @ x))


def block(params, x):
    return attention(mlp(params, rms_norm(x, params.norm, 1e-5)))
'''


SPLICED = '''\
# Axes: M model dim.
"""A tiny core model."""

import math

from core.attention import attention
import numpy as np
from core.attention import apply_rotary


def rms_norm(x, weight, eps):
    return x * weight / math.sqrt(eps)


# Squared ReLU, as in Primer: cheaper than GELU and as good at this size.
def relu_squared(x):
    return np.maximum(x, 0) ** 2


# The MLP: two matmuls and a squared ReLU between them.
def mlp(params, x):
    return params.w_down @ relu_squared(apply_rotary(params.w_up @ x))


def block(params, x):
    return attention(mlp(params, rms_norm(x, params.norm, 1e-5)))
'''


def test_splice_replaces_the_definition_inserts_helpers_before_use_and_adds_imports():
    core = codediff.load_core_sources("core", {"model": CORE_MODEL, "attention": CORE_ATTENTION})
    experiment = codediff.parse_module(EXPERIMENT)
    spliced = splice.splice(
        CORE_MODEL, "core/model.py", experiment, core, ["mlp"], ["relu_squared"], "core.model"
    )
    # comments above definitions travel with them; the helper lands before its first use; the import the
    # experiment had and the core definition from another module it now uses are both bound
    assert spliced.text == SPLICED
    assert spliced.names == ("mlp", "relu_squared")
    assert spliced.imports == ("import numpy as np", "from core.attention import apply_rotary")


def test_splice_refuses_a_helper_that_would_shadow_a_name():
    core = codediff.load_core_sources("core", {"model": CORE_MODEL, "attention": CORE_ATTENTION})
    experiment = codediff.parse_module(EXPERIMENT.replace("relu_squared", "math_helper"))
    shadowing = CORE_MODEL.replace("import math\n", "import math\nfrom x import math_helper\n")
    with pytest.raises(archive.GrugError, match="already binds math_helper"):
        splice.splice(shadowing, "core/model.py", experiment, core, ["mlp"], ["math_helper"], "core.model")


def test_gate_runs_every_core_test_unless_narrowed(repo, monkeypatch):
    monkeypatch.delenv(gate.GATE_TESTS_ENV, raising=False)
    tests, narrowed_ = gate.gate_tests(repo)
    assert tests == sorted(p.relative_to(repo).as_posix() for p in repo.glob("tests/test_grugformer_*.py"))
    assert tests and not narrowed_
    steps = gate.gate_steps(repo, "experiments/x.py", Path("/tmp/out"))
    assert [s.name for s in steps] == ["core tests", "starter smoke run"]
    assert steps[0].argv[:3] == (sys.executable, "-m", "pytest") and steps[0].argv[-len(tests) :] == tuple(
        tests
    )
    assert steps[1].argv[1:4] == ("experiments/x.py", "--smoke", "--out")
    monkeypatch.setenv(gate.GATE_TESTS_ENV, "tests/test_grugformer_core.py tests/nothing_*.py")
    assert gate.gate_tests(repo) == (["tests/test_grugformer_core.py"], True)


# ---------------------------------------------------------------------------------------------------
# End to end


@pytest.mark.slow
def test_promote_commit_runs_the_full_gate_and_lands_exactly_mlp(repo, monkeypatch):
    """The one full-gate run: every tests/test_grugformer_*.py and the starter's smoke run."""
    monkeypatch.delenv(gate.GATE_TESTS_ENV, raising=False)
    experiment = gelu_experiment(repo)
    last_good = git.Repo(repo).head.commit.hexsha
    core_before = {p.name: p.read_bytes() for p in (repo / "grug_core").glob("*.py")}
    starter_before = starter_file(repo).read_text()

    result = _invoke(repo, ["promote", IDEA, "--yes", "--commit", *WAIVE])
    assert result.exit_code == 0, result.output
    assert "core tests passed" in result.stderr and "starter smoke run passed" in result.stderr
    assert "pytest tests/test_grugformer_" in result.stdout and "narrowed" not in result.stdout

    # the core changed exactly there: model.py's mlp is the experiment's, everything else is as it was
    model = (repo / "grug_core" / "model.py").read_text()
    mine = codediff.parse_module(experiment.read_text()).definitions["mlp"]
    old, new = core_definitions(core_before["model.py"].decode()), core_definitions(model)
    assert new["mlp"] == mine.fingerprint != old["mlp"]
    assert {n: f for n, f in new.items() if n != "mlp"} == {n: f for n, f in old.items() if n != "mlp"}
    old_model = core_before["model.py"].decode()
    old_mlp = codediff.parse_module(old_model).definitions["mlp"]
    assert model == codediff.replace_definition(old_model, old_mlp, mine.source)  # byte for byte elsewhere
    for name, data in core_before.items():
        assert name == "model.py" or (repo / "grug_core" / name).read_bytes() == data

    # the starter tracks the new core: its diff is empty again, and only mlp changed in it
    starter_mlp = codediff.parse_module(starter_before).definitions["mlp"]
    assert starter_file(repo).read_text() == codediff.replace_definition(
        starter_before, starter_mlp, mine.source
    )
    assert _invoke(repo, ["diff", STARTER_ID, "--exit-code"]).exit_code == 0

    # two commits on promote/<id>: the promotion, then the archive recording its SHA
    repo_git = git.Repo(repo)
    assert repo_git.active_branch.name == f"promote/{IDEA}" and not repo_git.is_dirty(untracked_files=True)
    record, promotion = repo_git.head.commit, repo_git.head.commit.parents[0]
    assert promotion.parents[0].hexsha == last_good
    assert sorted(promotion.stats.files) == sorted(
        ["archive.yaml", "grug_core/model.py", starter_file(repo).relative_to(repo).as_posix()]
    )
    assert list(record.stats.files) == ["archive.yaml"]
    assert IDEA in promotion.message and "mlp" in promotion.message
    assert "Try a GELU gate in the MLP." in promotion.message
    promoted = entry(repo)
    assert promoted.status == "superseded"
    assert promoted.superseded_by == f"core@{promotion.hexsha[:12]}"
    assert promoted.last_known_good == last_good[:12]
    assert f"superseded_by core@{promotion.hexsha[:12]}" in result.stdout
    assert "tests/test_grugformer_model_loss.py" in result.stdout  # the tests covering model.py
    assert "superseded_by: core@pending" in repo_git.git.show(f"{promotion.hexsha}:archive.yaml")


def test_a_failing_core_test_rolls_everything_back_byte_for_byte(repo, monkeypatch):
    write(repo, PIN_TEST, PIN_TEST_SOURCE)
    gelu_experiment(repo)
    monkeypatch.setenv(gate.GATE_TESTS_ENV, PIN_TEST)
    files, state = snapshot(repo), git_state(repo)

    result = _invoke(repo, ["promote", IDEA, "--yes", "--commit", *WAIVE])
    assert result.exit_code == 1, result.output
    assert "core tests FAILED" in result.stderr and "test_mlp_is_swiglu" in result.stderr  # the output's tail
    assert result.stderr.strip().splitlines()[-1].startswith("error: the gate's core tests failed")
    assert "restored byte for byte" in result.stderr
    assert snapshot(repo) == files
    assert git_state(repo) == state and state[3] == ""  # same HEAD and branches, git status clean
    assert entry(repo).status == "active"


def test_ctrl_c_during_the_gate_restores_everything(repo, narrowed):
    write(repo, narrowed, FAST_TEST_SOURCE)
    gelu_experiment(repo)
    files, state = snapshot(repo), git_state(repo)
    model = repo / "grug_core" / "model.py"
    child = subprocess.Popen(
        [sys.executable, "-c", DEFAULT_SIGINT_THEN_GRUGCTL, "promote", IDEA, "--yes", "--commit", *WAIVE],
        cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while GELU not in model.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert GELU in model.read_text(), "the splice never happened"
    time.sleep(1.0)  # inside the gate now
    os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground process group
    output, _ = child.communicate(timeout=120)
    assert child.returncode == 130, output
    assert "interrupted; every touched file was restored" in output
    assert snapshot(repo) == files and git_state(repo) == state


@pytest.mark.slow
def test_dry_run_then_promote_without_commit_then_restore(repo, narrowed):
    write(repo, narrowed, FAST_TEST_SOURCE)
    experiment = gelu_experiment(repo)
    experiment_bytes = experiment.read_bytes()
    files, state = snapshot(repo), git_state(repo)

    result = _invoke(repo, ["promote", IDEA, "--dry-run", "--delete", *WAIVE])
    assert result.exit_code == 0, result.output
    assert snapshot(repo) == files and git_state(repo) == state  # wrote nothing
    out = result.stdout
    assert "would promote gelu-mlp (mlp) into the core: mlp" in out
    assert "--- a/grug_core/model.py" in out and "+++ b/grug_core/model.py" in out
    assert any(line.startswith("-") and SILU in line for line in out.splitlines())
    assert any(line.startswith("+") and GELU in line for line in out.splitlines())
    assert f"narrowed by ${gate.GATE_TESTS_ENV}" in out
    assert "remove experiments/speedrun/grugformer_gelu_mlp (git rm)" in out

    result = _invoke(repo, ["promote", IDEA, "--yes", "--delete", *WAIVE])
    assert result.exit_code == 0, result.output
    assert GELU in (repo / "grug_core" / "model.py").read_text()
    assert not experiment.exists() and not experiment.parent.exists()
    promoted = entry(repo)
    assert (promoted.status, promoted.superseded_by) == ("deleted", archive.CORE_PENDING)
    assert promoted.last_known_good == state[0][:12]
    assert "--superseded-by core@<sha>" in result.stderr  # how to resolve core@pending after committing
    assert git.Repo(repo).active_branch.name == state[1]  # no --commit: no branch, no commit
    assert git.Repo(repo).head.commit.hexsha == state[0]

    result = _invoke(repo, ["restore", IDEA])
    assert result.exit_code == 0, result.output
    assert experiment.read_bytes() == experiment_bytes
    assert entry(repo).status == "active" and entry(repo).superseded_by is None


@pytest.mark.parametrize(
    ("args", "setup", "message"),
    [
        (["promote", "nope"], None, "no experiment 'nope'"),
        (["promote", STARTER_ID], None, "is the starter"),
        (["promote", IDEA], "dirty", "uncommitted changes"),
        (["promote", IDEA], "superseded", "is superseded, not active"),
        (["promote", "plain"], "plain", "nothing to promote"),
        (["promote", IDEA], "two-buckets", "changes the buckets attention, mlp"),
        (["promote", IDEA, "--bucket", "loss"], None, "no core definition in the loss bucket"),
        (["promote", IDEA, "--bucket", "embedding"], None, "unknown bucket"),
        (["promote", IDEA, "--only", "block"], None, "block: not among gelu-mlp's changed core definitions"),
        (["promote", IDEA, "--only", "main"], None, "not among gelu-mlp's changed core definitions"),
        (["promote", IDEA, "--commit"], "branch", "branch promote/gelu-mlp already exists"),
        (["promote", IDEA, "--delete", "--allow-dirty"], "dirty-experiment", "--delete would lose"),
        (["promote", IDEA], "harness", "from the experiment's harness"),
    ],
)
def test_refusals_are_one_sentence_exit_2_and_write_nothing(repo, args, setup, message):
    path = gelu_experiment(repo)
    if setup == "dirty":
        write(repo, "README.md", "changed\n")
    elif setup == "superseded":
        archive.set_fields(repo / "archive.yaml", IDEA, status="superseded", superseded_by="core@pending")
        commit_all(repo, "superseded")
    elif setup == "plain":
        assert _invoke(repo, ["new", "plain", "--purpose", "Nothing changed."]).exit_code == 0
        commit_all(repo, "plain")
    elif setup == "two-buckets":
        surface_edit(path, "attention")
        commit_all(repo, "two buckets")
    elif setup == "branch":
        git.Repo(repo).git.branch(f"promote/{IDEA}")
    elif setup == "dirty-experiment":
        path.write_text(path.read_text() + "\n# more\n")
    elif setup == "harness":
        edit_definition(path, "mlp", GELU, "SMOKE.seed * " + GELU)
        commit_all(repo, "harness")
    files, state = snapshot(repo), git_state(repo)
    result = _invoke(repo, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert snapshot(repo) == files and git_state(repo) == state


def test_plan_warns_about_overlaps_and_leaves_copies_the_core_moved(repo):
    gelu_experiment(repo)
    other = gelu_experiment(repo, "gelu-too")
    edit_definition(other, "mlp", GELU, "2.0 * " + GELU)
    commit_all(repo, "another mlp change")
    # the core moves after both were scaffolded: rms_norm changes there, the experiments keep the old copy
    surface_edit(repo / "grug_core" / "model.py", "rms_norm")
    commit_all(repo, "core: rms_norm")

    loaded = archive.load_archive(repo / "archive.yaml")
    plan = promote.plan_promote(loaded, IDEA)
    assert plan.code.names == ("mlp",) and plan.code.helpers == ()
    assert any("gelu-too also changed mlp" in w for w in plan.warnings), plan.warnings
    assert any(w.startswith("rms_norm is as the core had it") for w in plan.warnings), plan.warnings
    assert "rms_norm" not in plan.code.core_diff
    assert plan.gate.covering["grug_core/model.py"]
    assert [e.path for e in plan.code.edits] == [
        "grug_core/model.py",
        starter_file(repo).relative_to(repo).as_posix(),
    ]


def test_plan_carries_a_helper_and_sorts_the_import_it_needs(repo):
    path = gelu_experiment(repo)
    source = path.read_text()
    mlp = codediff.parse_module(source).definitions["mlp"]
    helper = (
        "# tanh-approximated GELU written out, so the constant is visible.\n"
        "def gelu_tanh(x):\n"
        "    return 0.5 * x * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))\n\n\n"
    )
    text = mlp.source.replace(GELU, "gelu_tanh(")
    path.write_text(codediff.replace_definition(source, mlp, helper + text))
    commit_all(repo, "gelu by hand")

    plan = promote.plan_promote(archive.load_archive(repo / "archive.yaml"), IDEA)
    assert (plan.code.names, plan.code.helpers) == (("mlp",), ("gelu_tanh",))
    assert plan.code.modules == {"grug_core/model.py": ("mlp", "gelu_tanh")}
    assert plan.code.imports["grug_core/model.py"] == ("import math",)
    model = next(e for e in plan.code.edits if e.path == "grug_core/model.py").new.decode()
    assert "import dataclasses\nimport math\n\nimport jax\n" in model  # where ruff's isort puts it
    assert model.index("def gelu_tanh") < model.index("def mlp") < model.index("def block")
    assert "+# tanh-approximated GELU written out" in plan.code.core_diff
    starter = next(e for e in plan.code.edits if e.path != "grug_core/model.py").new.decode()
    assert starter.index("def gelu_tanh") < starter.index("def mlp")  # the starter tracks the core


@pytest.fixture()
def gate_passes(monkeypatch):
    """For tests of what happens after the gate: the gate itself is exercised by the tests above."""
    passed = gate.GateResult(ok=True, failed=None, tail="", seconds={"core tests": 0.0})
    monkeypatch.setattr(promote, "run_gate", lambda *args, **kwargs: passed)


def test_commit_with_delete_records_the_removal_in_the_promotion_commit(repo, gate_passes):
    path = gelu_experiment(repo)
    original = path.read_bytes()
    head = git.Repo(repo).head.commit.hexsha
    result = _invoke(repo, ["promote", IDEA, "--yes", "--commit", "--delete", *WAIVE])
    assert result.exit_code == 0, result.output
    repo_git = git.Repo(repo)
    promotion = repo_git.head.commit.parents[0]
    assert path.relative_to(repo).as_posix() in promotion.stats.files and not path.parent.exists()
    gone = entry(repo)
    assert (gone.status, gone.superseded_by) == ("deleted", f"core@{promotion.hexsha[:12]}")
    assert gone.last_known_good == head[:12] and not repo_git.is_dirty(untracked_files=True)
    # and it comes back byte for byte from its last known good commit
    assert _invoke(repo, ["restore", IDEA, "--as", "gelu-again"]).exit_code == 0
    assert experiment_file(repo, "gelu-again").read_bytes() == original


def test_a_failing_commit_rolls_back_the_archive_the_removal_and_the_branch(repo, gate_passes):
    gelu_experiment(repo)
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n")
    hook.chmod(0o755)
    files, state = snapshot(repo), git_state(repo)
    result = _invoke(repo, ["promote", IDEA, "--yes", "--commit", "--delete", *WAIVE])
    assert result.exit_code == 2, result.output
    assert "hook says no" in result.stderr
    assert snapshot(repo) == files and git_state(repo) == state
    assert entry(repo).status == "active"


# ---------------------------------------------------------------------------------------------------
# The results gate: refused without a significant win (nothing written), promoted with one built from
# real run records, and promoted with --waive, whose reason lands in archive.yaml.

NOISE = [0.004, -0.003, 0.006, -0.001, 0.002]


def test_promote_without_evidence_is_refused_and_writes_nothing(repo, narrowed):
    write(repo, narrowed, FAST_TEST_SOURCE)
    gelu_experiment(repo)
    files, state = snapshot(repo), git_state(repo)
    result = _invoke(repo, ["promote", IDEA, "--yes"])
    assert result.exit_code == 1, result.output
    assert f"{IDEA} is not significantly better than {STARTER_ID} on val_bpb at alpha 0.01" in result.stderr
    assert "--waive" in result.stderr and result.stderr.count("error:") == 1
    assert snapshot(repo) == files and git_state(repo) == state


@pytest.mark.slow
def test_a_significant_win_from_real_records_is_promoted(repo, narrowed):
    write(repo, narrowed, FAST_TEST_SOURCE)
    gelu_experiment(repo)
    record_seeds(repo, STARTER_ID, 0.014, seeds=5, offsets=NOISE)
    record_seeds(repo, IDEA, 0.016, seeds=5, offsets=NOISE[::-1])
    commit_all(repo, "runs")
    dry = _invoke(repo, ["promote", IDEA, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert re.search(r"val_bpb +5/5 paired .* better", dry.stdout), dry.stdout
    result = _invoke(repo, ["promote", IDEA, "--yes"])
    assert result.exit_code == 0, result.output
    assert entry(repo).status == "superseded" and entry(repo).waiver is None


def test_a_worse_result_is_refused_even_when_significant(repo, narrowed):
    write(repo, narrowed, FAST_TEST_SOURCE)
    gelu_experiment(repo)
    record_seeds(repo, STARTER_ID, 0.016, seeds=5, offsets=NOISE)
    record_seeds(repo, IDEA, 0.014, seeds=5, offsets=NOISE[::-1])
    commit_all(repo, "runs")
    before = (repo / "archive.yaml").read_bytes()
    result = _invoke(repo, ["promote", IDEA, "--yes"])
    assert result.exit_code == 1 and "worse (p = " in result.stderr
    assert (repo / "archive.yaml").read_bytes() == before


@pytest.mark.slow
def test_waive_promotes_and_records_the_reason(repo, narrowed):
    write(repo, narrowed, FAST_TEST_SOURCE)
    gelu_experiment(repo)
    reason = "systems-only: the same math, fused"
    result = _invoke(repo, ["promote", IDEA, "--yes", "--waive", reason])
    assert result.exit_code == 0, result.output
    assert f"waived: {reason}" in result.stdout
    assert entry(repo).waiver == reason and entry(repo).status == "superseded"
    blank = _invoke(repo, ["promote", IDEA, "--waive", " "])
    assert blank.exit_code == 2
