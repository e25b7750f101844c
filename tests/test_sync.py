"""grugctl sync: an experiment scaffolded before the core moved is merged onto the new core, definition by
definition, in real temporary git repositories built from a copy of this repository. No JAX runs."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import git
import pytest
from repo_copy import commit_all, make_repo
from test_diff import _invoke, edit_definition, experiment_file, starter_file
from test_promote import snapshot

from grugctl import archive, codediff
from grugctl.evidence import compare
from grugctl.experiments import sync
from grugctl.promotion import gate

REPO = Path(__file__).resolve().parents[1]
GELU = ("jax.nn.silu(", "jax.nn.gelu(")
# What the core (and the starter, as a promotion leaves it) changes after the experiments were copied.
CORE_RMS = ("return (normed * weight).astype(x.dtype)", "return (weight * normed).astype(x.dtype)")
CORE_BLOCK = ("x = x + mlp(params, ", "x = x + 1.0 * mlp(params, ")
CORE_FORWARD = ("params.token_embed[tokens])", "embed_scale(params.token_embed[tokens]))")
HELPER = "# A new core helper the refreshed forward needs.\ndef embed_scale(x):\n    return x * 1.0\n\n\n"
# What the experiment `mixed` changes: block elsewhere than the core (merges), rms_norm on the same line.
OWN_BLOCK = ("attended = attention(", "attended = 0.5 * attention(")
OWN_RMS = ("return (normed * weight).astype(x.dtype)", "return (normed * weight * 2.0).astype(x.dtype)")


def entry(root: Path, experiment_id: str) -> archive.Entry:
    return archive.load_archive(root / "archive.yaml").experiments[experiment_id]


def new(root: Path, idea: str, *edits: tuple[str, str, str]) -> Path:
    result = _invoke(root, ["new", idea, "--purpose", f"Try {idea}."])
    assert result.exit_code == 0, result.output
    path = experiment_file(root, idea)
    for name, old, text in edits:
        edit_definition(path, name, old, text)
    return path


def move_core(root: Path) -> None:
    """A promotion's effect: the core and the starter change rms_norm, block and forward (with a new
    helper), then commit."""
    for path in (root / "grug_core" / "model.py", starter_file(root)):
        edit_definition(path, "rms_norm", *CORE_RMS)
        edit_definition(path, "block", *CORE_BLOCK)
        edit_definition(path, "forward", *CORE_FORWARD)
        source = path.read_text()
        forward = codediff.parse_module(source).definitions["forward"]
        lines = source.splitlines(keepends=True)
        path.write_text("".join(lines[: forward.start - 1]) + HELPER + "".join(lines[forward.start - 1 :]))
    commit_all(root, "core: rms_norm, block, forward")


@pytest.fixture()
def moved(tmp_path: Path) -> Path:
    """Three experiments copied before the core moved: untouched, own mlp change, and `mixed`."""
    root = make_repo(tmp_path)
    new(root, "plain")
    new(root, "own-mlp", ("mlp", *GELU))
    new(root, "mixed", ("mlp", *GELU), ("block", *OWN_BLOCK), ("rms_norm", *OWN_RMS))
    commit_all(root, "three experiments")
    move_core(root)
    return root


def definitions(path: Path) -> dict[str, str]:
    return {n: d.source for n, d in codediff.parse_module(path.read_text()).definitions.items()}


def conflict_region(text: str, name: str) -> tuple[int, int]:
    """(first, last) line of top-level definition `name` in a file that may not parse: from its `def`
    to the line before the next top-level statement."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(f"def {name}("))
    last = next(i for i in range(first + 1, len(lines)) if re.match(r"(def |class |@|# -)", lines[i])) - 1
    return first, last


def test_merge_module_outcomes_on_synthetic_sources():
    then = codediff.load_core_sources(
        "core",
        {
            "model": "import math\n\n\ndef f(x):\n    return x\n\n\n"
            "def g(x):\n    a = 1\n    b = 2\n    c = 3\n    return x\n"
        },
    )
    now_source = (
        "import math\n\n\ndef helper(x):\n    return math.sqrt(x)\n\n\ndef f(x):\n    return helper(x)\n\n\n"
        "def g(x):\n    a = 10\n    b = 2\n    c = 3\n    return x\n"
    )
    now = codediff.load_core_sources("core", {"model": now_source})
    starter = codediff.parse_module(now_source)
    ours = "def f(x):\n    return x\n\n\ndef g(x):\n    a = 1\n    b = 2\n    c = 3\n    return 2 * x\n"
    merged = sync.merge_module(ours, "e.py", then, now, starter, ("e", "base", "now"))
    assert merged.outcomes == {"f": sync.REFRESHED, "g": sync.MERGED}
    assert merged.added == ("helper (copied from core/model.py)", "import math")
    module = codediff.parse_module(merged.text)
    assert module.definitions["g"].source == "def g(x):\n    a = 10\n    b = 2\n    c = 3\n    return 2 * x\n"
    assert module.definitions["f"].source == "def f(x):\n    return helper(x)\n"
    assert list(module.definitions) == ["helper", "f", "g"] and "math" in module.imports
    clash = ours.replace("a = 1\n", "a = 5\n")
    merged = sync.merge_module(clash, "e.py", then, now, starter, ("e", "base", "now"))
    assert merged.outcomes["g"] == sync.CONFLICT
    assert "<<<<<<< e\n    a = 5\n||||||| base\n    a = 1\n=======\n    a = 10\n>>>>>>> now\n" in merged.text


def test_sync_all_refreshes_keeps_merges_and_marks_one_conflict(moved):
    root = moved
    core = definitions(root / "grug_core" / "model.py")
    before = {i: experiment_file(root, i).read_bytes() for i in ("plain", "own-mlp", "mixed")}
    bases = {i: entry(root, i).base for i in before}
    head = git.Repo(root).head.commit.hexsha[:12]

    files = snapshot(root)
    dry = _invoke(root, ["sync", "--all", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert snapshot(root) == files  # --dry-run writes nothing
    assert "would sync plain: refreshed rms_norm, block, forward" in dry.stdout
    assert "+++ b/experiments/speedrun/grugformer_plain/grugformer_plain.py" in dry.stdout

    result = _invoke(root, ["sync", "--all", "--yes"])
    assert result.exit_code == 1, result.output
    assert "conflict in mixed: rms_norm" in result.stderr and "grugctl sync mixed --continue" in result.stderr

    # plain is the new core's copy again, helper included; its diff against the core is empty
    plain = definitions(experiment_file(root, "plain"))
    assert all(plain[n] == core[n] for n in ("rms_norm", "block", "forward", "embed_scale"))
    assert _invoke(root, ["diff", "plain", "--exit-code"]).exit_code == 0
    # own-mlp keeps its own change and nothing else differs from the core
    report = json.loads(_invoke(root, ["diff", "own-mlp", "--format", "json"]).output)
    assert [d["name"] for d in report["definitions"] if d["status"] != "unchanged"] == ["mlp"]
    for i in ("plain", "own-mlp"):
        assert (entry(root, i).base, entry(root, i).synced_from) == (head, bases[i])

    # mixed: block merged (both edits), forward refreshed, mlp kept, rms_norm marked inside itself only
    text = experiment_file(root, "mixed").read_text()
    first, last = conflict_region(text, "rms_norm")
    markers = [i for i, line in enumerate(text.splitlines()) if re.match(r"(<{7}|\|{7}|={7}|>{7})", line)]
    assert len(markers) == 4 and all(first < i < last for i in markers)
    assert OWN_BLOCK[1] in text and CORE_BLOCK[1] in text and GELU[1] in text and HELPER in text
    assert entry(root, "mixed").base == bases["mixed"]  # not recorded until --continue

    # --continue refuses while markers remain; --abort restores every byte
    refused = _invoke(root, ["sync", "mixed", "--continue"])
    assert refused.exit_code == 1 and "still holds conflict markers" in refused.stderr
    assert _invoke(root, ["sync", "mixed"]).exit_code == 2  # a second sync waits for the first
    aborted = _invoke(root, ["sync", "mixed", "--abort"])
    assert aborted.exit_code == 0, aborted.output
    assert experiment_file(root, "mixed").read_bytes() == before["mixed"]
    assert sync.in_progress(root) == []

    # again, then resolve (keep both: the core's operand order, the experiment's factor) and continue
    assert _invoke(root, ["sync", "mixed", "--yes"]).exit_code == 1
    path = experiment_file(root, "mixed")
    resolved = re.sub(
        r"<<<<<<< mixed\n.*?>>>>>>> [^\n]*\n",
        "    return (weight * normed * 2.0).astype(x.dtype)\n",
        path.read_text(),
        flags=re.S,
    )
    path.write_text(resolved)
    done = _invoke(root, ["sync", "mixed", "--continue"])
    assert done.exit_code == 0, done.output
    assert (entry(root, "mixed").base, entry(root, "mixed").synced_from) == (head, bases["mixed"])
    report = json.loads(_invoke(root, ["diff", "mixed", "--format", "json"]).output)
    assert sorted(d["name"] for d in report["definitions"] if d["status"] != "unchanged") == [
        "block", "mlp", "rms_norm",
    ]  # fmt: skip
    assert _invoke(root, ["diff", "mixed", "--against", "origin", "--exit-code"]).exit_code == 1
    # once committed, nothing is left to do: a second --all changes nothing
    commit_all(root, "synced")
    again = _invoke(root, ["sync", "--all", "--yes"])
    assert again.exit_code == 0 and again.stdout.count("up to date") == 3, again.output


def test_results_recorded_before_a_sync_no_longer_count(moved):
    root = moved
    loaded = archive.load_archive(root / "archive.yaml")
    code = compare.current_code(loaded, loaded.experiments["plain"])
    row = {"seed": 0, "steps": 10, "val_bpb": 2.5, "code": code, "config": {"steps": 10}}
    archive.append_result(root / "archive.yaml", "plain", row)
    commit_all(root, "a run")
    rows, _, _ = compare.usable_rows(archive.load_archive(root / "archive.yaml"), "plain", None)
    assert len(rows) == 1
    assert _invoke(root, ["sync", "plain", "--yes"]).exit_code == 0
    rows, _, excluded = compare.usable_rows(archive.load_archive(root / "archive.yaml"), "plain", None)
    assert rows == [] and excluded == {"other code than the current file": 1}


def test_refusals_write_nothing(moved):
    root = moved
    path = experiment_file(root, "plain")
    path.write_text(path.read_text() + "\n# uncommitted\n")
    files = snapshot(root)
    for args, message in [
        (["sync", "plain"], "uncommitted changes; commit them first, or pass --allow-dirty"),
        (["sync", "nope"], "no experiment 'nope'"),
        (["sync", "grugformer-starter"], "is the starter"),
        (["sync"], "or pass --all"),
        (["sync", "plain", "--continue"], "no sync of plain is waiting"),
    ]:
        result = _invoke(root, args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)
    assert snapshot(root) == files
    result = _invoke(root, ["sync", "--all", "--yes"])  # --all skips the dirty one and says so
    assert (
        "skipped plain" in result.stderr
        and snapshot(root)[path.relative_to(root).as_posix()] == files[path.relative_to(root).as_posix()]
    )


def test_a_sync_killed_halfway_is_recovered_byte_for_byte(moved):
    """SIGKILL after the files and the conflicted one's saved bytes are written, before archive.yaml:
    the journal holds all of them, and `grugctl recover` puts every byte back."""
    root = moved
    files = snapshot(root)
    code = (
        "import os, signal\nfrom grugctl.experiments import sync\n"
        "sync._record = lambda *args: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from grugctl.cli import app\napp(['sync', '--all', '--yes'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert sync.in_progress(root) == ["mixed"] and snapshot(root) != files
    assert "stopped halfway" in _invoke(root, ["sync", "plain"]).stderr
    result = _invoke(root, ["recover", "--yes"])
    assert result.exit_code == 0, result.output
    assert snapshot(root) == files and sync.in_progress(root) == []


def test_sync_never_imports_jax():
    probe = (
        "import sys\nfrom grugctl.cli import app\n"
        "try:\n    app(['sync', '--all', '--dry-run'])\nexcept SystemExit:\n    pass\n"
        "jax = any(m == 'jax' or m.startswith('jax.') for m in sys.modules)\n"
        "print('JAX' if jax else 'nojax', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert result.stderr.split()[-1] == "nojax", result.stderr


# ---------------------------------------------------------------------------------------------------
# promote: the experiments it makes stale, --sync-all, and tests promoted with the change

SOFTCAP = "attn-softcap"
CAPPED = "    scores = 5.0 * jnp.tanh(scores / 5.0)  # tanh soft cap on the logits\n"
SHIPPED = """\
import math

import jax.numpy as jnp
import numpy as np

from grug_core.attention import AttentionMask, reference_attention


def test_logits_are_soft_capped_at_five():
    # Logits 200 and 0: without a cap the first key takes all the weight, capped it takes e^5 / (e^5 + 1).
    q = jnp.full((1, 1, 1, 4), 10.0)
    k = jnp.concatenate([jnp.full((1, 1, 1, 4), 10.0), jnp.zeros((1, 1, 1, 4))], axis=1)
    v = jnp.concatenate([jnp.ones((1, 1, 1, 4)), jnp.zeros((1, 1, 1, 4))], axis=1)
    out = reference_attention(q, k, v, AttentionMask())
    np.testing.assert_allclose(out, math.exp(5) / (math.exp(5) + 1), atol=1e-5)
"""
UPDATED_REFERENCE_TEST = '''\
@pytest.mark.parametrize("kh", [4, 2])
def test_matches_jax_dot_product_attention(kh):
    """reference_attention soft-caps its logits at 5: compare it with that computed by hand."""
    q, k, v = qkv(h=4, kh=kh)
    k, v = jnp.repeat(k, 4 // kh, axis=2), jnp.repeat(v, 4 // kh, axis=2)
    scores = jnp.einsum("bshd,bthd->bhst", q, k) / np.sqrt(q.shape[-1])
    scores = 5.0 * jnp.tanh(scores / 5.0)
    causal = jnp.tril(jnp.ones(scores.shape[-2:], bool))
    probs = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
    expected = jnp.einsum("bhst,bthd->bshd", probs, v)
    out = reference_attention(q, k, v, AttentionMask(is_causal=True))
    np.testing.assert_allclose(out, expected, atol=1e-5)


'''


def softcap_experiment(root: Path) -> Path:
    """An experiment overriding the core's reference_attention with tanh-capped logits, shipping a test
    of the new behaviour in its folder."""
    result = _invoke(
        root, ["new", SOFTCAP, "--bucket", "attention", "--purpose", "Soft-cap attention logits."]
    )
    assert result.exit_code == 0, result.output
    path = experiment_file(root, SOFTCAP)
    core = codediff.parse_module((root / "grug_core" / "attention.py").read_text())
    mine = core.definitions["reference_attention"].source.replace(
        "    scores = scores / math.sqrt(d)\n", "    scores = scores / math.sqrt(d)\n" + CAPPED
    )
    assert CAPPED in mine
    text = path.read_text().replace("    reference_attention,\n)\n", ")\n", 1)
    helpers = "from grug_core.attention import MASKED_SCORE, _check_shapes, materialize\n"
    text = text.replace("from grug_core.data import", helpers + "from grug_core.data import", 1)
    text = text.replace("\ndef attention(", "\n" + mine + "\n\ndef attention(", 1)
    path.write_text(text)
    (path.parent / "test_attn_softcap.py").write_text(SHIPPED)
    commit_all(root, "attn-softcap")
    return path


@pytest.mark.slow
def test_softcap_lands_with_its_updated_tests_and_is_refused_with_the_old_ones(tmp_path, monkeypatch):
    """The real attention tests in the gate (its pytest half narrowed to the one reference test the
    change breaks, plus the shipped test), both ways."""
    from test_promote import WAIVE, git_state

    root = make_repo(tmp_path)
    softcap_experiment(root)
    reference_test = "tests/test_grugformer_core.py::test_matches_jax_dot_product_attention"
    monkeypatch.setenv(gate.GATE_TESTS_ENV, reference_test)
    shipped = "tests/test_grugformer_attn_softcap.py"

    # the test asserting the old behaviour (today's reference test) fails: refused, every byte restored
    files, state = snapshot(root), git_state(root)
    refused = _invoke(root, ["promote", SOFTCAP, "--yes", "--commit", *WAIVE])
    assert refused.exit_code == 1, refused.output
    assert (
        "core tests FAILED" in refused.stderr and "test_matches_jax_dot_product_attention" in refused.stderr
    )
    assert snapshot(root) == files and git_state(root) == state and not (root / shipped).exists()

    # with the reference test updated in the working tree, it lands with both tests in its commit
    core_tests = root / "tests" / "test_grugformer_core.py"
    text = core_tests.read_text()
    start = text.index('@pytest.mark.parametrize("kh", [4, 2])\ndef test_matches_jax_dot_product_attention')
    end = text.index("def test_fully_masked_rows_are_zero_without_nan")
    core_tests.write_text(text[:start] + UPDATED_REFERENCE_TEST + text[end:])
    dry = _invoke(root, ["promote", SOFTCAP, "--dry-run", *WAIVE])
    assert (
        f"tests promoted with it (in the gate and the commit): tests/test_grugformer_core.py, {shipped}"
        in (dry.stdout)
    )
    assert f"pytest {reference_test} {shipped}" in dry.stdout  # the edited file stays narrowed to its node
    landed = _invoke(root, ["promote", SOFTCAP, "--yes", "--commit", *WAIVE])
    assert landed.exit_code == 0, landed.output
    assert CAPPED in (root / "grug_core" / "attention.py").read_text()
    promotion = git.Repo(root).head.commit.parents[0]
    assert {"grug_core/attention.py", "tests/test_grugformer_core.py", shipped} <= set(promotion.stats.files)
    assert entry(root, SOFTCAP).tests == f"tests/test_grugformer_core.py, {shipped}"
    assert not git.Repo(root).is_dirty(untracked_files=True)


def test_promote_lists_what_it_makes_stale_and_sync_all_syncs_in_its_commit(tmp_path, monkeypatch):
    """The gate itself is exercised above and in test_promote.py; here it passes."""
    from test_promote import GELU, SILU, WAIVE, gelu_experiment

    from grugctl.promotion import promote

    passed = gate.GateResult(ok=True, failed=None, tail="", seconds={"core tests": 0.0})
    monkeypatch.setattr(promote, "run_gate", lambda *args, **kwargs: passed)
    root = make_repo(tmp_path)
    new(root, "plain")
    new(root, "clash", ("mlp", SILU, "jax.nn.relu("))
    commit_all(root, "plain and clash")
    base = entry(root, "plain").base
    clash = experiment_file(root, "clash").read_bytes()
    gelu_experiment(root)

    result = _invoke(root, ["promote", "gelu-mlp", "--yes", "--commit", "--sync-all", *WAIVE])
    assert result.exit_code == 0, result.output
    assert "makes stale: plain, clash" in result.stdout
    assert "synced onto the new core: plain" in result.stdout
    assert "clash was not synced: mlp conflict" in result.stderr
    promotion = git.Repo(root).head.commit.parents[0]
    plain = experiment_file(root, "plain")
    assert plain.relative_to(root).as_posix() in promotion.stats.files  # the same commit
    assert GELU in plain.read_text() and _invoke(root, ["diff", "plain", "--exit-code"]).exit_code == 0
    assert (entry(root, "plain").base, entry(root, "plain").synced_from) == (promotion.hexsha[:12], base)
    assert entry(root, "clash").base == base and experiment_file(root, "clash").read_bytes() == clash
    assert not git.Repo(root).is_dirty(untracked_files=True)
