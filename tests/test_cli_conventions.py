"""The conventions the README promises, on every command: -h, completion, an example in each --help,
--json on reading commands, --dry-run on writers, no confirmation without a terminal unless --yes."""

import json
import os

import pytest
from repo_copy import commit_all, make_repo
from test_diff import _invoke, new_experiment

from grugctl.cli import app


def every_command() -> list[list[str]]:
    """Every leaf command as its argv words, e.g. ["archive", "status"]."""
    import typer.main

    root = typer.main.get_command(app)
    found = []

    def walk(group, prefix: list[str]) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):  # a group (typer carries its own click)
                walk(command, [*prefix, name])
            else:
                found.append([*prefix, name])

    walk(root, [])
    return found


COMMANDS = every_command()
WRITERS = [
    ["new"], ["run"], ["promote"], ["sync"], ["delete"], ["restore"], ["recover"], ["plot"], ["check"],
    ["archive", "set"], ["archive", "resolve"], ["archive", "import-md"], ["report"], ["export"],
]  # fmt: skip
READERS = [
    ["archive", "status"], ["archive", "show"], ["diff"], ["run"], ["compare"], ["check"], ["report"],
    ["export"],
]  # fmt: skip


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = make_repo(tmp_path_factory.mktemp("conventions"))
    new_experiment(root, "wider-mlp", "--bucket", "mlp")
    return root


def test_every_command_is_listed_and_takes_dash_h_with_an_example(repo):
    assert len(COMMANDS) == 18 and ["archive", "status"] in COMMANDS and ["sync"] in COMMANDS
    for words in [[], *COMMANDS]:
        short, long = _invoke(repo, [*words, "-h"]), _invoke(repo, [*words, "--help"])
        assert short.exit_code == 0 and short.stdout == long.stdout, words
        assert "Example: grugctl" in long.stdout, words


@pytest.mark.parametrize("words", WRITERS, ids=" ".join)
def test_every_writer_has_dry_run(repo, words):
    assert "--dry-run" in _invoke(repo, [*words, "--help"]).stdout


@pytest.mark.parametrize("words", READERS, ids=" ".join)
def test_every_reader_has_json(repo, words):
    assert "--json" in _invoke(repo, [*words, "--help"]).stdout


def test_shell_completion_is_offered(repo):
    assert "--install-completion" in _invoke(repo, ["--help"]).stdout
    import subprocess
    import sys
    from pathlib import Path

    # The installed script, as a shell would run it (completion keys on the program's name). Run from a
    # test there is no parent shell to detect, so the shell is named, as typer's own tests do.
    grugctl = Path(sys.executable).parent / "grugctl"
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    command = [str(grugctl), "--show-completion", "bash"]
    script = subprocess.run(command, capture_output=True, text=True, env=env)
    assert script.returncode == 0 and "_GRUGCTL_COMPLETE=complete_bash" in script.stdout, script.stderr


def test_diff_json_is_format_json_and_two_formats_are_refused(repo):
    as_json = _invoke(repo, ["diff", "wider-mlp", "--json"])
    assert as_json.exit_code == 0
    assert as_json.stdout == _invoke(repo, ["diff", "wider-mlp", "--format", "json"]).stdout
    assert json.loads(as_json.stdout)["experiment"] == "wider-mlp"
    both = _invoke(repo, ["diff", "wider-mlp", "--json", "--format", "md"])
    assert both.exit_code == 2 and "ask for two formats" in both.stderr


def test_run_dry_run_lists_the_paired_order_and_trains_nothing(repo):
    before = (repo / "archive.yaml").read_bytes()
    args = ["run", "wider-mlp", "--paired", "--seeds", "2", "--steps", "20", "--dry-run", "--json"]
    result = _invoke(repo, args)
    assert result.exit_code == 0, result.output
    planned = json.loads(result.stdout)
    assert [(r["id"], r["seed"]) for r in planned] == [
        ("grugformer-starter", 0), ("wider-mlp", 0), ("wider-mlp", 1), ("grugformer-starter", 1),
    ]  # fmt: skip
    assert planned[0]["pair"] == planned[1]["pair"] and all(r["record"] for r in planned)
    assert planned[1]["command"][-2:] == ["--steps", "20"]
    assert (repo / "archive.yaml").read_bytes() == before
    assert not (repo / "runs" / "wider-mlp").exists() and not (repo / "runs" / ".scratch").exists()
    text = _invoke(repo, ["run", "wider-mlp", "--smoke", "--dry-run"])
    assert text.stdout.startswith("would run wider-mlp seed 0, not recorded: python experiments/")


@pytest.fixture(scope="module")
def recorded(repo):
    from test_plot import record_seeds

    record_seeds(repo, "wider-mlp", 0.02, seeds=2)
    return repo


def test_plot_dry_run_writes_nothing(recorded, tmp_path):
    repo = recorded
    out = tmp_path / "curves.png"
    result = _invoke(repo, ["plot", "wider-mlp", "--out", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would write" in result.stderr and "wider-mlp (2 seeds)" in result.stderr
    assert not out.exists()


def test_without_a_terminal_a_deleting_command_needs_yes(tmp_path):
    root = make_repo(tmp_path)
    path = new_experiment(root, "doomed", "--bucket", "mlp")
    before = (root / "archive.yaml").read_bytes()
    refused = _invoke(root, ["delete", "doomed"])
    assert refused.exit_code == 2
    assert refused.stderr.strip() == (
        "error: no terminal to answer 'Delete doomed?'; pass --yes to go ahead (nothing changed)"
    )
    assert path.exists() and (root / "archive.yaml").read_bytes() == before
    assert _invoke(root, ["delete", "doomed", "--yes"]).exit_code == 0 and not path.exists()
    commit_all(root, "delete doomed")


def test_plot_asks_before_overwriting_a_file(recorded, tmp_path):
    repo = recorded
    out = tmp_path / "mine.png"
    out.write_bytes(b"someone's figure")
    refused = _invoke(repo, ["plot", "wider-mlp", "--out", str(out)])
    assert refused.exit_code == 2 and "pass --yes to go ahead" in refused.stderr
    assert out.read_bytes() == b"someone's figure"
    assert _invoke(repo, ["plot", "wider-mlp", "--out", str(out), "--yes"]).exit_code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_diff_keeps_warnings_off_stdout(tmp_path):
    from test_diff import surface_edit

    root = make_repo(tmp_path)
    path = new_experiment(root, "two-buckets", "--bucket", "mlp")
    surface_edit(path, "mlp")
    surface_edit(path, "next_token_loss")
    commit_all(root, "two buckets")
    result = _invoke(root, ["diff", "two-buckets"])
    assert "change one bucket at a time" in result.stderr
    assert "warning" not in result.stdout and "closest existing experiment" not in result.stdout
    assert "── mlp" in result.stdout


def test_piped_archive_show_is_neither_cut_nor_padded(repo):
    long_notes = "a note " * 40 + "\nand a second line"
    assert _invoke(repo, ["archive", "set", "wider-mlp", "--notes", long_notes]).exit_code == 0
    shown = _invoke(repo, ["archive", "show", "wider-mlp"]).stdout
    lines = shown.splitlines()
    assert all(line == line.rstrip() for line in lines) and "…" not in shown
    assert any(line.endswith(long_notes.splitlines()[0].rstrip()) for line in lines)
    assert any(line.strip() == "and a second line" for line in lines)


def test_untracked_files_do_not_block_promote(tmp_path):
    root = make_repo(tmp_path)
    new_experiment(root, "stray-file", "--bucket", "mlp")
    (root / "curves.png").write_bytes(b"a plot nobody committed")
    result = _invoke(root, ["promote", "stray-file", "--dry-run"])
    assert "uncommitted changes" not in result.stderr, result.stderr
