"""grugctl check: each failing condition produced in a real temporary git repository (a copy of this
repository's core, starter, archive and core tests) and detected with its own message. The static checks
run through `grugctl check --fast`; the slow ones (smoke runs, core tests) are called directly on tiny
inputs, and one test runs the whole non-fast command with the core tests narrowed to one small file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest
from repo_copy import commit_all, make_repo
from test_diff import _invoke, edit_definition, experiment_file, starter_file

from grugctl import archive, checks, codediff
from grugctl.promotion import gate
from grugctl.runs.results import RESULT_KEYS

REPO = Path(__file__).resolve().parents[1]
IDEA = "gelu-mlp"
SILU, GELU = "jax.nn.silu(", "jax.nn.gelu("
STATIC = (
    "journal", "schema", "tree", "records", "git", "contracts", "buckets", "drift", "lint", "smoke",
    "core tests",
)  # fmt: skip
TINY_TEST = "tests/test_grugformer_tiny.py"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A clean repository holding one committed, resolved experiment besides the starter, and two recorded
    runs of the starter (a clone without them is warned that compare has no baseline)."""
    from test_plot import record_seeds

    root = make_repo(tmp_path_factory.mktemp("template"))
    record_seeds(root, "grugformer-starter", 0.014, seeds=2)
    result = _invoke(root, ["new", IDEA, "--bucket", "mlp", "--purpose", "Try a GELU gate in the MLP."])
    assert result.exit_code == 0, result.output
    commit_all(root, f"{IDEA}: scaffold")
    assert _invoke(root, ["archive", "resolve"]).exit_code == 0
    commit_all(root, "resolve SHAs")
    return root


@pytest.fixture()
def repo(template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(template, root, symlinks=True)
    return root


def check(root: Path, *args: str) -> tuple[int, dict[str, dict]]:
    """`grugctl check --fast --json ...`: (exit code, check name -> result)."""
    result = _invoke(root, ["check", "--fast", "--json", *args])
    data = json.loads(result.stdout)
    assert data["ok"] == (result.exit_code == 0)
    return result.exit_code, {c["name"]: c for c in data["checks"]}


def failing(results: dict[str, dict]) -> set[str]:
    return {name for name, r in results.items() if not r["ok"]}


def text_of(result: dict) -> str:
    return "\n".join([result["message"], *result["details"]])


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------
# A clean repository; output formats


def test_clean_repo_passes_fast_with_one_line_per_check(repo: Path):
    result = _invoke(repo, ["check", "--fast"])
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == [n.split()[0] for n in STATIC]
    assert [line.split()[0] for line in lines[:-1]] == ["ok"] * 9 + ["skip"] * 2
    assert lines[-1] == "11 checks: 9 passed, 2 skipped"
    assert "2 active experiments" in result.stdout and "1 experiment compared" in result.stdout


def test_json_is_well_formed_and_alone_on_stdout(repo: Path):
    result = _invoke(repo, ["check", "--fast", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["ok"] is True and data["fast"] is True
    assert [c["name"] for c in data["checks"]] == list(STATIC)
    for item in data["checks"]:
        assert set(item) == {"name", "ok", "status", "message", "details"}
        assert isinstance(item["details"], list) and item["status"] in ("pass", "skip")


def test_malformed_archive_exits_2_with_the_archives_one_line_error(repo: Path):
    text = (repo / "archive.yaml").read_text().replace("status: active", "status: actve", 1)
    (repo / "archive.yaml").write_text(text)
    result = _invoke(repo, ["check", "--fast", "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: archive.yaml:") and "'actve' is not one of" in line


def test_static_checks_never_import_jax_and_the_cache_stays_out_of_git(repo: Path):
    code = (
        "import sys\nfrom grugctl import checks\nimport grugctl.cli\n"
        "results = checks.run_checks(None, fast=True)\n"
        "assert all(r.ok for r in results), results\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (repo / checks.CACHE_DIR / checks.CACHE_FILE).is_file()
    assert git.Repo(repo).git.status("--porcelain") == ""


def test_verdicts_come_from_the_cache_until_a_file_changes(repo: Path):
    loaded = archive.load_archive(repo / "archive.yaml")
    assert checks.analyse_experiments(loaded).cached == 0
    assert checks.analyse_experiments(loaded).cached == 2
    path = experiment_file(repo, IDEA)
    path.write_text(path.read_text() + "\ndef broken(:\n")
    analysis = checks.analyse_experiments(loaded)
    assert analysis.cached == 1 and "does not parse" in analysis.facts[IDEA].parse_error


# ---------------------------------------------------------------------------------------------------
# archive <-> tree, archive <-> git


def test_missing_file(repo: Path):
    shutil.rmtree(experiment_file(repo, IDEA).parent)
    code, results = check(repo)
    assert code == 1 and failing(results) == {"tree"}
    assert results["tree"]["message"] == (
        f"{IDEA}: active file {experiment_file(repo, IDEA).relative_to(repo).as_posix()} is missing; "
        "restore it or set status deleted"
    )


def test_records_travel_with_a_clone_and_a_missing_one_fails(repo: Path, tmp_path: Path):
    from test_plot import record_seeds

    shipped = sum(
        len(entry.results) for entry in archive.load_archive(repo / "archive.yaml").experiments.values()
    )
    record_seeds(repo, "grugformer-starter", 0.014, seeds=2)
    record_seeds(repo, IDEA, 0.02, seeds=2)
    commit_all(repo, "record runs")
    clone = tmp_path / "clone"
    git.Repo.clone_from(repo, clone)
    code, results = check(clone)
    assert (
        code == 0
        and results["records"]["message"] == f"all {shipped + 4} result rows have a sound run record"
    )
    compared = _invoke(clone, ["compare", IDEA, "--json", "--metric", "val_bpb"])
    assert compared.exit_code == 0 and json.loads(compared.stdout)[0]["metrics"][0]["n_candidate"] == 2
    assert _invoke(clone, ["plot", IDEA, "--out", str(tmp_path / "c.png")]).exit_code == 0
    row = archive.load_archive(clone / "archive.yaml").experiments[IDEA].results[0]
    (clone / row["record"]).unlink()
    code, results = check(clone)
    assert code == 1 and failing(results) == {"records"}
    assert text_of(results["records"]).count(f"{IDEA}: {row['record']} is missing") == 1


def test_a_starter_without_runs_of_its_current_code_is_a_warning(tmp_path: Path):
    from test_plot import record_seeds

    repo = make_repo(tmp_path)
    code, results = check(repo)
    assert code == 0 and results["records"]["status"] == "warn", results["records"]
    assert "grugformer-starter has no recorded run of its current code" in text_of(results["records"])
    record_seeds(repo, "grugformer-starter", 0.014, seeds=1)
    code, results = check(repo)
    assert code == 0 and results["records"]["status"] == "pass", results["records"]


@pytest.mark.parametrize("damage", ["truncated", "edited", "row edited", "no metrics"])
def test_a_damaged_record_fails_check_and_compare_leaves_it_out(repo: Path, damage: str):
    from test_plot import record_seeds

    record_seeds(repo, "grugformer-starter", 0.014, seeds=3)
    record_seeds(repo, IDEA, 0.02, seeds=3)
    entry = archive.load_archive(repo / "archive.yaml").experiments[IDEA]
    row = entry.results[1]
    path = repo / row["record"]
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif damage == "edited":  # a better loss typed into the record by hand
        record = json.loads(path.read_text())
        record["metrics"]["val_bpb"] = 1.0
        path.write_text(json.dumps(record, indent=1) + "\n")
    elif damage == "row edited":  # the record is intact; its archive row claims another loss
        archive.update_entries(
            repo / "archive.yaml",
            [IDEA],
            lambda nodes, _: nodes[IDEA]["results"][1].__setitem__("val_bpb", 1.0),
        )
    else:  # a hand-written record: parses, but lacks what its schema requires
        path.write_text(json.dumps({"version": 1, "experiment": IDEA, "seed": 1}) + "\n")
    code, results = check(repo)
    assert code == 1 and failing(results) == {"records"}, results
    message = text_of(results["records"])
    assert message.count(row["record"]) == 1 and f"{IDEA}: {row['record']}" in message, message
    compared = _invoke(repo, ["compare", IDEA, "--json", "--metric", "val_bpb"])
    assert compared.exit_code == 0, compared.output
    (comparison,) = json.loads(compared.stdout)
    assert comparison["metrics"][0]["n_candidate"] == 2
    assert comparison["excluded_candidate"] == {"damaged run record (see grugctl check)": 1}
    shown = _invoke(repo, ["compare", IDEA])
    assert "damaged run record" in shown.output, shown.output


def test_a_repository_without_its_core_package_fails_contracts_in_one_line(repo: Path):
    shutil.rmtree(repo / "grug_core")
    code, results = check(repo)
    assert code == 1 and "contracts" in failing(results)
    assert "the core package grug_core has no modules" in text_of(results["contracts"])


def test_unregistered_file(repo: Path):
    write(repo, "experiments/speedrun/stray/stray.py", "X = 1\n")
    code, results = check(repo)
    assert code == 1 and failing(results) == {"tree"}
    assert "experiments/speedrun/stray/stray.py is not named by any entry" in results["tree"]["message"]


def test_stale_deleted_file(repo: Path):
    assert _invoke(repo, ["archive", "set", IDEA, "--status", "deleted"]).exit_code == 0
    assert _invoke(repo, ["archive", "resolve"]).exit_code == 0
    code, results = check(repo)
    assert code == 1 and failing(results) == {"tree"}
    assert (
        f"{IDEA}: deleted, but" in results["tree"]["message"] and "still exists" in results["tree"]["message"]
    )


def test_two_entries_sharing_a_path(repo: Path):
    path = experiment_file(repo, IDEA).relative_to(repo).as_posix()
    archive.add_entry(repo / "archive.yaml", {"id": "twin", "path": path, "status": "superseded",
                                              "superseded_by": IDEA, "purpose": "Same file."})  # fmt: skip
    assert _invoke(repo, ["archive", "resolve"]).exit_code == 0
    code, results = check(repo)
    assert code == 1 and failing(results) == {"tree"}
    assert results["tree"]["message"] == f"{IDEA}, twin share the path {path}; give each entry its own file"


def test_unknown_sha(repo: Path):
    archive.set_fields(repo / "archive.yaml", IDEA, introduced="deadbeefdead")
    code, results = check(repo)
    assert code == 1 and failing(results) == {"git"}
    assert results["git"]["message"] == (
        f"{IDEA}.introduced: deadbeefdead is not a commit in this repository; fix it or run resolve"
    )


def test_fix_fills_missing_shas_then_passes(repo: Path):
    archive.set_fields(repo / "archive.yaml", IDEA, introduced=None)
    archive.set_fields(repo / "archive.yaml", "grugformer-starter", introduced=None)
    # An empty SHA git could fill (what `new` + `git commit` leaves) warns; it never fails the check.
    code, results = check(repo)
    assert code == 0 and results["git"]["status"] == "warn"
    assert results["git"]["message"] == "every SHA is a commit; 2 warnings"
    assert f"{IDEA}.introduced is empty but git knows it" in text_of(results["git"])
    assert "`grugctl check --fix` writes it" in text_of(results["git"])

    before = (repo / "archive.yaml").read_bytes()
    code, results = check(repo, "--fix", "--dry-run")
    assert results["git"]["message"].startswith("--fix would fill 2 SHA(s) from git")
    assert (repo / "archive.yaml").read_bytes() == before

    code, results = check(repo, "--fix")
    assert code == 0, results["git"]
    assert results["git"]["message"].startswith("--fix filled 2 SHA(s) from git")
    first = git.Repo(repo).git.log("--format=%H", "--diff-filter=A", "--", experiment_file(repo, IDEA))
    assert archive.load_archive(repo / "archive.yaml").experiments[IDEA].introduced == first[:12]
    assert check(repo)[0] == 0


# ---------------------------------------------------------------------------------------------------
# experiment contracts, buckets, drift


def test_broken_experiment_fails_its_contract_even_with_fast(repo: Path):
    path = experiment_file(repo, IDEA)
    path.write_text(path.read_text() + "\n\ndef broken(:\n    pass\n")
    code, results = check(repo)
    assert code == 1 and "contracts" in failing(results)
    line = len(path.read_text().splitlines()) - 1
    rel = path.relative_to(repo).as_posix()
    assert results["contracts"]["message"].startswith(f"{IDEA}: {rel} does not parse (line {line}: ")


def test_experiment_missing_an_edit_surface_definition(repo: Path):
    path = experiment_file(repo, IDEA)
    source = path.read_text()
    path.write_text(codediff.replace_definition(source, codediff.parse_module(source).definitions["mlp"], ""))
    code, results = check(repo)
    assert code == 1 and "contracts" in failing(results)
    assert results["contracts"]["message"].startswith(f"{IDEA}: lacks mlp from the starter's edit surface")


def test_noverify_is_reported_as_a_warning_and_needs_a_reason(repo: Path):
    path = experiment_file(repo, IDEA)
    anchor = "\nfrom __future__ import annotations\n"
    path.write_text(path.read_text().replace(anchor, "\n# grug: noverify needs a GPU" + anchor, 1))
    code, results = check(repo)
    assert code == 0 and results["contracts"]["status"] == "warn"
    assert results["contracts"]["details"] == [f"{IDEA}: not verified (# grug: noverify needs a GPU)"]

    path.write_text(path.read_text().replace("noverify needs a GPU", "noverify"))
    code, results = check(repo)
    assert code == 1 and failing(results) == {"contracts"}
    assert "`# grug: noverify` needs a reason" in results["contracts"]["message"]


def test_two_bucket_experiment(repo: Path):
    path = experiment_file(repo, IDEA)
    edit_definition(path, "mlp", SILU, GELU)
    edit_definition(path, "rms_norm", "+ eps)", "+ 2 * eps)")
    code, results = check(repo)
    assert code == 1 and failing(results) == {"buckets"}
    assert results["buckets"]["message"] == (
        f"{IDEA} changes several buckets against grugformer-starter (mlp: mlp; block: rms_norm): "
        "change one bucket at a time"
    )
    edit_definition(path, "rms_norm", "+ 2 * eps)", "+ eps)")  # one bucket again
    assert check(repo)[0] == 0


def test_drifted_experiment_warns_and_names_the_definitions(repo: Path):
    core = repo / "grug_core" / "model.py"
    edit_definition(core, "rms_norm", "+ eps)", "+ 2 * eps)")
    edit_definition(starter_file(repo), "rms_norm", "+ eps)", "+ 2 * eps)")  # the starter tracks the core
    commit_all(repo, "core: rms_norm changes")
    code, results = check(repo)
    assert code == 0 and results["drift"]["status"] == "warn"  # a warning, not a failure
    base = archive.load_archive(repo / "archive.yaml").experiments[IDEA].base
    (detail,) = results["drift"]["details"]
    assert detail.startswith(f"{IDEA}: the core changed rms_norm since its base {base}")
    assert f"run `grugctl sync {IDEA}`" in detail  # the fix, named


# ---------------------------------------------------------------------------------------------------
# lint, smoke runs, core tests (the slow ones directly, on tiny inputs)


def test_lint_error(repo: Path):
    path = experiment_file(repo, IDEA)
    anchor = "from __future__ import annotations\n"
    path.write_text(path.read_text().replace(anchor, anchor + "\nimport this_is_unused\n", 1))
    code, results = check(repo)
    assert code == 1 and failing(results) == {"lint"}
    assert results["lint"]["message"].startswith("`ruff check` failed (`ruff check --fix` fixes most)")
    assert any("F401" in line and "this_is_unused" in line for line in results["lint"]["details"])


def test_format_error_found_by_the_lint_check(repo: Path):
    write(repo, "tests/badly_formatted.py", "X = {  'a':1}\n")
    result = checks.check_lint(repo)
    assert not result.ok and result.message == "`ruff format` failed (`ruff format` fixes most)"
    assert any("badly_formatted.py" in line for line in result.details)


def test_smoke_run_failures_and_missing_result_keys(repo: Path):
    loaded = archive.load_archive(repo / "archive.yaml")
    path = experiment_file(repo, IDEA)
    path.write_text('raise SystemExit("boom: this experiment needs data it cannot find")\n')
    result = checks.check_smoke(loaded, [IDEA])
    assert not result.ok
    assert result.message.startswith(f"{IDEA}: `python {path.relative_to(repo).as_posix()} --smoke` failed")
    assert result.message.endswith("(exit status 1): boom: this experiment needs data it cannot find")

    path.write_text(
        "import json\nimport sys\n\nout = sys.argv[sys.argv.index('--out') + 1]\n"
        "json.dump({'experiment': 'x', 'val_bpb': 1.0}, open(out, 'w'))\n"
    )
    result = checks.check_smoke(loaded, [IDEA])
    missing = [k for k in RESULT_KEYS if k not in ("experiment", "val_bpb")]
    assert not result.ok and result.message.startswith(
        f"{IDEA}: its --smoke results lack {', '.join(missing)}"
    )

    path.write_text("# grug: noverify needs a GPU\n" + path.read_text())
    result = checks.check_smoke(loaded, [IDEA])
    assert result.ok and result.status == "warn"
    assert result.details == (f"{IDEA}: smoke run skipped (# grug: noverify needs a GPU)",)


def test_failing_core_test(repo: Path):
    write(repo, "tests/test_grugformer_fails.py", "def test_sums():\n    assert 1 + 1 == 3\n")
    result = checks.check_core_tests(repo, ["tests/test_grugformer_fails.py"])
    assert not result.ok and result.name == "core tests"
    assert result.message.startswith("pytest: 1 failed in ")
    assert any("assert 1 + 1 == 3" in line for line in result.details)

    write(repo, "tests/test_grugformer_fails.py", "def test_sums():\n    assert 1 + 1 == 2\n")
    result = checks.check_core_tests(repo, ["tests/test_grugformer_fails.py"])
    assert result.ok and result.message.startswith("pytest: 1 passed in ")


def test_core_tests_default_to_every_core_test_with_the_sharding_one(monkeypatch):
    monkeypatch.delenv(gate.GATE_TESTS_ENV, raising=False)
    step, tests, narrowed = checks.core_test_step(REPO, None)
    assert not narrowed
    assert "tests/test_grugformer_sharding.py" in tests and "tests/test_grugformer_core.py" in tests
    assert step.argv[:4] == (sys.executable, "-m", "pytest", "-q")


# ---------------------------------------------------------------------------------------------------
# The whole command, once: the starter's real --smoke run, pytest (narrowed to one tiny core test), ruff


@pytest.mark.slow
def test_full_check_passes_on_a_clean_repo(tmp_path: Path, monkeypatch):
    from test_plot import record_seeds

    repo = make_repo(tmp_path)  # the starter alone: one real smoke run
    record_seeds(repo, "grugformer-starter", 0.014, seeds=2)  # a baseline, as a shipped clone has
    assert _invoke(repo, ["archive", "resolve"]).exit_code == 0
    commit_all(repo, "resolve SHAs")
    write(
        repo,
        TINY_TEST,
        "import grug_core.model\n\n\ndef test_config():\n    assert grug_core.model.GrugConfig\n",
    )
    monkeypatch.setenv(gate.GATE_TESTS_ENV, TINY_TEST)
    result = _invoke(repo, ["check"])
    assert result.exit_code == 0, result.stdout + result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines()[:-1]}
    assert lines["smoke"].startswith("ok    smoke       1 experiment completed --smoke with every result key")
    assert lines["core"].startswith("ok    core tests  pytest: 1 passed in ")
    assert f"(narrowed to {TINY_TEST})" in lines["core"]
    assert result.stdout.splitlines()[-1] == "11 checks: 11 passed"
    assert "smoke: grugformer-starter (1/1) ..." in result.stderr
