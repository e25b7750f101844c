"""Values are data, input is bounded, the repository is the boundary: what a hostile user can hand grugctl
is stored byte for byte or refused with one sentence, with every file left as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from archive_helpers import commit, init_repo, one_line_error, run_cli
from repo_copy import commit_all, make_repo
from test_diff import _invoke

from grugctl import archive

HEAD = "version: 1\nexperiments:\n"
ENTRY = "  qk-norm:\n    path: e/qk.py\n    status: active\n    purpose: QK norm.\n"
SMALL = HEAD + ENTRY

# What `archive set --notes` must give back exactly (argv cannot carry NUL; the API test below does).
VALUES = [
    "a\u2028b\nc", "x\u0085y", "\u2029", "cr\rlf", "crlf\r\nline", "\ttab\tinside\t", "  lead and trail  ",
    "# not a comment", "key: value", "'single' \"double\" `back`", "emoji 😀🎉 and CJK 漢字", "x" * 100_000,
    "null", "~", "true", "123", "0x1f", "1e3", ".inf", "- item", "[a, b]", "{a: b}", "|", ">", "&anchor",
    "*alias", "!!python/object/apply:os.system ['true']", "%YAML 1.2", "---", "...", "", " ", "\n", "a\n",
    "a\n\n", "\nlead", "line one\nline two  \n", "two\nlines", "\x01\x7f control", "\ufeffbom", "é\u0301",
    "[bold]markup[/bold] :x:", "a\\nb", "\x1c\x1d\x1e\x0b\x0c",
]  # fmt: skip


def _archive(tmp_path: Path, text: str | bytes = SMALL) -> Path:
    init_repo(tmp_path)
    path = tmp_path / "archive.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.fixture()
def in_repo(tmp_path, monkeypatch) -> Path:
    path = _archive(tmp_path)
    monkeypatch.chdir(tmp_path)
    return path


# ---------------------------------------------------------------------------------------------------
# values round-trip or are refused up front


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_every_value_set_comes_back_exactly_and_the_file_stays_editable(in_repo, value):
    result = run_cli("archive", "set", "qk-norm", "--notes", value)
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:  # refused up front, nothing written
        one_line_error(result)
        assert in_repo.read_text() == SMALL
        return
    shown = run_cli("archive", "show", "qk-norm", "--json")
    assert json.loads(shown.stdout)["notes"] == value
    # A later write of another field works and leaves the value alone.
    again = run_cli("archive", "set", "qk-norm", "--issue", "#7")
    assert again.exit_code == 0, again.output
    loaded = archive.load_archive(in_repo).experiments["qk-norm"]
    assert (loaded.notes, loaded.issue) == (value, "#7")


def test_nul_and_every_control_character_round_trip_through_the_api(tmp_path):
    path = _archive(tmp_path)
    value = "".join(chr(c) for c in range(32)) + "\x7f\x85\u2028\u2029\ufeff end"
    archive.set_entry(path, "qk-norm", {"notes": value, "purpose": "One line with \t a tab."})
    entry = archive.load_archive(path).experiments["qk-norm"]
    assert entry.notes == value and entry.purpose == "One line with \t a tab."
    archive.set_entry(path, "qk-norm", {"issue": "later"})  # still editable
    assert archive.load_archive(path).experiments["qk-norm"].notes == value


def test_crlf_and_a_bom_are_kept(tmp_path):
    text = "\ufeff# kept\r\n" + SMALL.replace("\n", "\r\n")
    path = _archive(tmp_path, text.encode())
    archive.set_fields(path, "qk-norm", notes="two\nlines")
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf# kept\r\n")
    assert data.count(b"\n") == data.count(b"\r\n")  # every line break still CRLF, none mixed
    assert archive.load_archive(path).experiments["qk-norm"].notes == "two\nlines"
    archive.add_entry(path, {"id": "b", "path": "e/b.py", "status": "active", "purpose": "B."})
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and data.count(b"\n") == data.count(b"\r\n")


@pytest.mark.parametrize(
    "text, where",
    [
        (SMALL + "    results:\n    - val_bpb: 1.0\n      val_bpb: 2.0\n", ":9:7:"),
        (SMALL + "    results:\n    - config: {lr: 1, lr: 2}\n", ":8:23:"),
        (SMALL + "    purpose: Again.\n", ":7:5:"),
        (HEAD + ENTRY + ENTRY, ":7:3:"),
    ],
)
def test_duplicate_keys_are_refused_at_every_depth(tmp_path, monkeypatch, text, where):
    path = _archive(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    result = run_cli("archive", "status")
    assert result.exit_code == 2
    message = one_line_error(result)
    assert "duplicate" in message and where in message, message
    assert path.read_text() == text


# ---------------------------------------------------------------------------------------------------
# bounded input

BILLION_LAUGHS = (
    SMALL
    + "    results:\n    - a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"      {chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9)
    )
)
SELF_REFERENCE = SMALL + "    results:\n    - &loop {me: *loop}\n"
DEEP = SMALL + "    results:\n    - " + "[" * 5000 + "]" * 5000 + "\n"  # libyaml's own limit
DEEPER_THAN_RESULTS_NEED = SMALL + "    results:\n    - " + "[" * 100 + "]" * 100 + "\n"


HOSTILE = {"bomb": BILLION_LAUGHS, "self": SELF_REFERENCE, "deep": DEEP, "100": DEEPER_THAN_RESULTS_NEED}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_alias_bombs_self_references_and_deep_nesting_are_refused_within_a_second(tmp_path, text):
    path = _archive(tmp_path, text)
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "grugctl.cli", "archive", "status"], cwd=tmp_path, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - start < 3  # interpreter start included; the refusal itself is milliseconds
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert any(word in lines[0] for word in ("aliases", "deeper", "nesting depth")), lines[0]
    assert path.read_text() == text
    started = time.monotonic()
    with pytest.raises(archive.GrugError):
        archive.load_archive(path)
    assert time.monotonic() - started < 1


def test_import_md_refuses_devices_fifos_and_huge_files(in_repo, tmp_path):
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.md"
    with open(huge, "wb") as handle:
        handle.truncate(archive.MAX_MARKDOWN + 1)  # sparse: costs no disk
    for source, words in (("/dev/zero", "not a regular file"), (fifo, "not a regular file"),
                          (huge, "larger than 16 MiB"), (tmp_path / "missing.md", "does not exist"),
                          (tmp_path, "not a regular file")):  # fmt: skip
        start = time.monotonic()
        result = run_cli("archive", "import-md", str(source))
        assert result.exit_code == 2 and words in one_line_error(result), (source, result.output)
        assert time.monotonic() - start < 5
    assert in_repo.read_text() == SMALL


# ---------------------------------------------------------------------------------------------------
# the repository is the boundary


@pytest.fixture()
def outside(tmp_path) -> Path:
    secret = tmp_path / "outside" / "secret.py"
    secret.parent.mkdir()
    secret.write_text('print("SECRET CONTENT ran")\n')
    return secret


def test_experiment_files_linking_outside_are_refused_by_every_command(tmp_path, outside):
    root = make_repo(tmp_path)
    link = root / "experiments" / "speedrun" / "grugformer_leak" / "grugformer_leak.py"
    link.parent.mkdir()
    link.symlink_to(outside)
    archive.add_entry(root / "archive.yaml", {
        "id": "leak", "path": link.relative_to(root).as_posix(), "status": "active", "purpose": "Leaks.",
        "bucket": "mlp", "origin": "grugformer-starter",
    })  # fmt: skip
    commit_all(root, "a link out")
    before = outside.read_bytes()
    for command in (["diff", "leak"], ["run", "leak", "--smoke"], ["new", "copy", "--from", "leak",
                    "--purpose", "Copy it."], ["promote", "leak", "--dry-run"]):  # fmt: skip
        result = _invoke(root, command)
        assert result.exit_code == 2, (command, result.output)
        message = one_line_error(result)
        assert "outside the repository" in message and "SECRET" not in result.output, (command, message)
    assert not (root / "experiments" / "speedrun" / "grugformer_copy").exists()
    assert outside.read_bytes() == before
    status = _invoke(root, ["archive", "status", "--json"])
    assert any(w["kind"] == "outside-repo" for w in json.loads(status.stdout)["warnings"])


def test_an_archive_linking_outside_is_refused_without_quoting_the_file(tmp_path, outside):
    root = tmp_path / "repo"
    root.mkdir()
    init_repo(root)
    (root / "archive.yaml").symlink_to(outside)
    result = _invoke(root, ["archive", "status"])
    assert result.exit_code == 2
    message = one_line_error(result)
    assert "outside the repository" in message and "SECRET" not in result.output


def test_error_messages_never_quote_a_whole_file(tmp_path, monkeypatch):
    text = "\n".join(f"line {i} of a long file that is not an archive" for i in range(500)) + "\n"
    _archive(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    result = run_cli("archive", "status")
    assert result.exit_code == 2 and len(one_line_error(result)) < 300


def test_user_text_is_printed_literally(in_repo):
    text = "[bold red]not bold[/bold red] :x: :thumbs_up:"
    assert run_cli("archive", "set", "qk-norm", "--notes", text).exit_code == 0
    done = subprocess.run(
        [sys.executable, "-m", "grugctl.cli", "archive", "show", "qk-norm"], cwd=in_repo.parent,
        capture_output=True, text=True,
    )  # fmt: skip
    assert text in done.stdout, done.stdout


def test_restore_refuses_a_folder_holding_files_it_did_not_delete(tmp_path):
    root = make_repo(tmp_path)
    result = _invoke(root, ["new", "gone", "--purpose", "To be deleted."])
    assert result.exit_code == 0, result.output
    commit_all(root, "gone")
    assert _invoke(root, ["delete", "gone", "--yes"]).exit_code == 0
    commit_all(root, "delete gone")
    folder = root / "experiments" / "speedrun" / "grugformer_gone"
    folder.mkdir()
    (folder / "notes.txt").write_text("someone else's file")
    before = (root / "archive.yaml").read_bytes()
    result = _invoke(root, ["restore", "gone"])
    assert result.exit_code == 2
    assert "notes.txt" in one_line_error(result) and "move them away" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert (root / "archive.yaml").read_bytes() == before


def test_ids_and_paths_are_clipped_in_messages(tmp_path, monkeypatch):
    path = _archive(tmp_path, SMALL.replace("status: active", "status: " + "z" * 5000))
    monkeypatch.chdir(tmp_path)
    result = run_cli("archive", "status")
    assert result.exit_code == 2 and len(one_line_error(result)) < 300
    assert path.exists()


def test_git_history_helpers_still_work_on_a_committed_archive(tmp_path):
    """A sanity check that the boundary does not refuse ordinary repositories."""
    repo = init_repo(tmp_path)
    commit(repo, "add", {"archive.yaml": SMALL, "e/qk.py": "x = 1\n"})
    filled, _ = archive.resolve_archive(tmp_path / "archive.yaml")
    assert filled and filled[0][:2] == ("qk-norm", "introduced")
