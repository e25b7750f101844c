"""grugctl diff: the definition-level engine on synthetic sources, then the command end to end in
temporary git repositories built from a copy of this repository. No JAX is imported or run."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from fresh_process import loaded_from, run_commands
from repo_copy import commit_all, make_repo
from typer.testing import CliRunner

from grugctl import archive, codediff
from grugctl.cli import app
from grugctl.experiments import diffrender

REPO = Path(__file__).resolve().parents[1]
STARTER_ID = "grugformer-starter"

CORE_MODEL = '''\
# Axes: M model dim.
"""A tiny core model."""

import math


def rms_norm(x, weight, eps):
    return x * weight / math.sqrt(eps)


# The MLP: two matmuls.
def mlp(params, x):
    return params.w_down @ (params.w_up @ x)


def block(params, x):
    return mlp(params, rms_norm(x, params.norm, 1e-5))
'''
CORE_LOSS = """\
def next_token_loss(hidden, labels):
    return (hidden - labels) ** 2
"""
STARTER = '''\
"""The starter."""

import math

from core.model import GrugConfig

STEPS = 10


def rms_norm(x, weight, eps):
    return x * weight / math.sqrt(eps)


# The MLP: two matmuls.
def mlp(params, x):
    return params.w_down @ (params.w_up @ x)


def block(params, x):
    return mlp(params, rms_norm(x, params.norm, 1e-5))


def next_token_loss(hidden, labels):
    return (hidden - labels) ** 2


def train(steps=STEPS):
    return block(None, steps)
'''


def core_of(**modules: str) -> codediff.Core:
    return codediff.load_core_sources("core", modules)


def statuses(changes) -> dict[str, tuple[str, str | None]]:
    return {c.name: (c.status, c.bucket) for c in changes if c.status != codediff.UNCHANGED}


def against_core(source: str) -> list[codediff.Change]:
    core = core_of(model=CORE_MODEL, loss=CORE_LOSS)
    return codediff.diff_against_core(codediff.parse_module(source), core, codediff.parse_module(STARTER))


# ------------------------------------------------------------------------------------------ engine


def test_parse_keeps_comments_decorators_and_spans():
    module = codediff.parse_module(
        "import os\n\n# why\n# more why\n@decorate\ndef f():\n    return 1\n\nX: int = 3\nY = Z = 4\n"
    )
    f = module.definitions["f"]
    assert f.source == "# why\n# more why\n@decorate\ndef f():\n    return 1\n"
    assert (f.start, f.end, f.kind) == (3, 7, "function")
    assert module.definitions["X"].kind == "constant"
    assert "Y" not in module.definitions and "Z" not in module.definitions
    assert module.imports["os"].statement == "import os"


def test_starter_copy_against_core_is_empty_and_harness_ignored():
    changes = against_core(STARTER)
    assert statuses(changes) == {}
    names = {c.name for c in changes}
    assert names == {"rms_norm", "mlp", "block", "next_token_loss"}  # train and STEPS are harness


def test_changed_mlp_is_exactly_mlp_in_bucket_mlp():
    source = STARTER.replace("params.w_down @ (params.w_up @ x)", "params.w_down @ max(params.w_up @ x, 0)")
    changes = against_core(source)
    assert statuses(changes) == {"mlp": ("changed", "mlp")}
    (change,) = codediff.changed(changes)
    assert change.module == "model" and change.added == 1 and change.removed == 1
    # hunk headers are numbered as lines of the two files
    assert any(line.startswith("@@ -11,3 +14,3 @@") for line in change.diff)
    assert codediff.bucket_warning(changes) is None


def test_comment_and_format_only_edit_is_no_change():
    source = STARTER.replace(
        "def block(params, x):\n    return mlp(params, rms_norm(x, params.norm, 1e-5))",
        "def block(params,\n          x):\n    # residual added by the caller\n"
        "    return mlp(params, rms_norm(x, params.norm, 0.00001))",
    ).replace("# The MLP: two matmuls.", "# Reworded comment.")
    assert statuses(against_core(source)) == {}


def test_two_buckets_warn_and_helper_is_experiment_only_inheriting_bucket():
    source = STARTER.replace("return (hidden - labels) ** 2", "return abs(hidden - labels)").replace(
        "params.w_down @ (params.w_up @ x)", "params.w_down @ relu2(params.w_up @ x)"
    )
    source += "\n\ndef relu2(x):\n    return max(x, 0) ** 2\n\n\ndef unused_helper():\n    return 1\n"
    changes = against_core(source)
    assert statuses(changes) == {
        "mlp": ("changed", "mlp"),
        "next_token_loss": ("changed", "loss"),
        "relu2": ("experiment-only", "mlp"),
        "unused_helper": ("experiment-only", None),
    }
    assert "change one bucket at a time" in codediff.bucket_warning(changes)


def test_dropped_copy_is_core_only_unless_imported_from_core():
    dropped = STARTER.replace("def rms_norm(x, weight, eps):\n    return x * weight / math.sqrt(eps)\n", "")
    assert statuses(against_core(dropped)) == {"rms_norm": ("core-only", "block")}
    imported = dropped.replace("import math\n", "import math\n\nfrom core.model import rms_norm\n")
    assert statuses(against_core(imported)) == {}


def test_ambiguous_core_name_is_an_error_only_when_it_matters():
    core = core_of(model=CORE_MODEL, loss=CORE_LOSS + "\n\ndef mlp(x):\n    return x\n")
    assert core.ambiguous == {"mlp": ("loss", "model")}
    with pytest.raises(codediff.GrugError, match="mlp is defined in both core/loss.py and core/model.py"):
        codediff.diff_against_core(codediff.parse_module(STARTER), core, codediff.parse_module(STARTER))


def test_closest_drift_dependencies_and_splice():
    core = core_of(model=CORE_MODEL, loss=CORE_LOSS)
    me = codediff.parse_module(STARTER.replace("** 2", "** 3"))
    others = {
        "far": STARTER.replace("1e-5", "2e-5").replace("** 2", "** 4"),
        "near": "# only formatting differs\n" + STARTER.replace("(eps)", "( eps )"),
        "broken": "def (:\n",
    }
    assert codediff.closest(me, others, core) == ("near", 2)
    # the cheap shortlist ranks by raw lines, so formatting can mislead it; the exact metric decides
    assert codediff.closest(me, others, core, shortlist=1) == ("far", 4)

    moved = core_of(model=CORE_MODEL.replace("1e-5", "1e-6"), loss=CORE_LOSS)
    assert codediff.drifted(codediff.parse_module(STARTER), core, moved) == ["block"]

    module = codediff.parse_module(STARTER + "\n\ndef h():\n    return g()\n\n\ndef g():\n    return 1\n")
    assert codediff.dependencies(module, "train", ["h", "g"]) == []
    module2 = codediff.parse_module(module.source.replace("return block(None, steps)", "return h()"))
    assert codediff.dependencies(module2, "train", ["h", "g"]) == ["h", "g"]

    old = core.modules["model"].definitions["mlp"]
    spliced = codediff.replace_definition(CORE_MODEL, old, "# New why.\ndef mlp(params, x):\n    return x\n")
    reparsed = codediff.parse_module(spliced)
    assert reparsed.definitions["mlp"].source == "# New why.\ndef mlp(params, x):\n    return x\n"
    assert reparsed.definitions["block"].fingerprint == core.modules["model"].definitions["block"].fingerprint


def test_needed_imports_are_the_ones_the_target_module_lacks():
    core = core_of(model=CORE_MODEL, loss=CORE_LOSS)
    source = STARTER.replace("import math\n", "import math\n\nimport numpy as np\n").replace(
        "return params.w_down @ (params.w_up @ x)", "return np.maximum(params.w_down, GrugConfig) + math.pi"
    )
    experiment = codediff.parse_module(source)
    needed = codediff.needed_imports(experiment, ["mlp"], core.modules["model"], "core.model")
    assert [i.statement for i in needed] == ["import numpy as np"]
    needed = codediff.needed_imports(experiment, ["mlp"], core.modules["loss"], "core.loss")
    assert [i.statement for i in needed] == [
        "import math",
        "import numpy as np",
        "from core.model import GrugConfig",
    ]


def test_text_is_coloured_only_when_asked():
    core = core_of(model=CORE_MODEL, loss=CORE_LOSS)
    changes = codediff.diff_against_core(
        codediff.parse_module(STARTER.replace("** 2", "** 3")), core, codediff.parse_module(STARTER)
    )
    report = codediff.DiffReport("x", "x.py", "core", "core", tuple(changes), (), None)
    assert "\x1b[" not in diffrender.render(report) and "\x1b[" not in diffrender.render(report, stat=True)
    assert "\x1b[32m+    return (hidden - labels) ** 3\x1b[0m" in diffrender.render(report, color=True)


def test_syntax_error_is_one_sentence():
    with pytest.raises(codediff.GrugError, match=r"x.py does not parse \(line 1"):
        codediff.parse_module("def (:\n", "x.py")


# ------------------------------------------------------------------------------- command, real repos


def _invoke(root: Path, args):
    import os

    previous = os.getcwd()
    os.chdir(root)
    try:
        return CliRunner().invoke(app, list(args), catch_exceptions=False)
    finally:
        os.chdir(previous)


def starter_file(root: Path) -> Path:
    return next((root / "experiments" / "speedrun" / "grugformer_starter").glob("*.py"))


def experiment_file(root: Path, experiment_id: str) -> Path:
    stem = "grugformer_" + experiment_id.replace("-", "_")
    return root / "experiments" / "speedrun" / stem / f"{stem}.py"


def edit_definition(path: Path, name: str, old: str, new: str) -> None:
    """Replace `old` by `new` inside the top-level definition `name` only."""
    source = path.read_text()
    definition = codediff.parse_module(source).definitions[name]
    assert old in definition.source, f"{old!r} not in {name}"
    path.write_text(codediff.replace_definition(source, definition, definition.source.replace(old, new, 1)))


def surface_edit(path: Path, name: str) -> None:
    """A semantic edit to definition `name`: multiply its first return value by one."""
    source = path.read_text()
    definition = codediff.parse_module(source).definitions[name]
    match = re.search(r"^(\s+)return (.+)$", definition.source, re.M)
    assert match, f"no return line in {name}"
    text = definition.source.replace(match[0], f"{match[1]}return 1 * ({match[2]})", 1)
    path.write_text(codediff.replace_definition(source, definition, text))


SURFACES = ("attention", "rms_norm", "mlp", "block", "forward", "next_token_loss", "optimizer")


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


def new_experiment(root: Path, idea: str = "relu-squared", *extra: str) -> Path:
    result = _invoke(root, ["new", idea, "--purpose", "Try something.", *extra])
    assert result.exit_code == 0, result.output
    commit_all(root, f"add {idea}")
    return experiment_file(root, idea)


def test_starter_diff_is_empty(repo):
    result = _invoke(repo, ["diff", STARTER_ID, "--exit-code"])
    assert result.exit_code == 0, result.output
    assert "no changes against grug_core" in result.output


def test_new_then_diff_no_change_then_mlp_edit_is_exactly_mlp(repo):
    path = new_experiment(repo)
    assert _invoke(repo, ["diff", "relu-squared", "--exit-code"]).exit_code == 0

    surface_edit(path, "mlp")
    result = _invoke(repo, ["diff", "relu-squared", "--format", "json", "--exit-code"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert [
        (d["name"], d["bucket"], d["status"]) for d in report["definitions"] if d["status"] != "unchanged"
    ] == [("mlp", "mlp", "changed")]
    assert report["warnings"] == [] and report["closest"]["id"] == STARTER_ID

    text = _invoke(repo, ["diff", "relu-squared"]).output
    assert "── mlp" in text and "bucket mlp" in text and "+    return 1 * (" in text
    stat = _invoke(repo, ["diff", "relu-squared", "--stat"]).output
    assert re.search(r"^ mlp +mlp +changed +\| \+1 -1$", stat, re.M), stat
    assert _invoke(repo, ["diff", "relu-squared", "--bucket", "loss", "--exit-code"]).exit_code == 0


def test_comment_only_edit_and_two_bucket_edit_and_helper(repo):
    path = new_experiment(repo)
    source = path.read_text()
    mlp = codediff.parse_module(source).definitions["mlp"]
    path.write_text(codediff.replace_definition(source, mlp, "# A comment that says why.\n" + mlp.source))
    assert _invoke(repo, ["diff", "relu-squared", "--exit-code"]).exit_code == 0

    surface_edit(path, "mlp")
    surface_edit(path, "block")
    path.write_text(path.read_text() + "\n\ndef squash(x):\n    return x\n")
    result = _invoke(repo, ["diff", "relu-squared", "--format", "json"])
    report = json.loads(result.output)
    found = {
        d["name"]: (d["status"], d["bucket"]) for d in report["definitions"] if d["status"] != "unchanged"
    }
    assert found == {
        "mlp": ("changed", "mlp"),
        "block": ("changed", "block"),
        "squash": ("experiment-only", None),
    }
    assert any("change one bucket at a time" in w for w in report["warnings"])
    assert "change one bucket at a time" in _invoke(repo, ["diff", "relu-squared"]).output


def test_against_origin_after_the_core_moves(repo):
    path = new_experiment(repo)
    # The core and the starter move on together (a promotion): the experiment now drifts from the core...
    core_model = repo / "grug_core" / "model.py"
    for file in (core_model, starter_file(repo)):
        surface_edit(file, "block")
    commit_all(repo, "core moves")
    against_core = json.loads(_invoke(repo, ["diff", "relu-squared", "--format", "json"]).output)
    assert [d["name"] for d in against_core["definitions"] if d["status"] != "unchanged"] == ["block"]
    # ...but against its origin at its base commit it changed nothing, until it edits mlp.
    result = _invoke(repo, ["diff", "relu-squared", "--against", "origin", "--exit-code"])
    assert result.exit_code == 0, result.output
    surface_edit(path, "mlp")
    report = json.loads(
        _invoke(repo, ["diff", "relu-squared", "--against", "origin", "--format", "json"]).output
    )
    assert [d["name"] for d in report["definitions"] if d["status"] != "unchanged"] == ["mlp"]
    assert report["base"].startswith(STARTER_ID + "@")
    # check's drift question: copies left as the core was at the base commit, which the core has changed since
    loaded = archive.load_archive(repo / "archive.yaml")
    base = loaded.experiments["relu-squared"].base
    experiment = codediff.parse_module(path.read_text())
    assert codediff.drifted(
        experiment, codediff.core_at(loaded, base), codediff.load_core(repo / "grug_core")
    ) == ["block"]
    # and against the (moved) starter by id: block and mlp
    report = json.loads(
        _invoke(repo, ["diff", "relu-squared", "--against", STARTER_ID, "--format", "json"]).output
    )
    assert sorted(d["name"] for d in report["definitions"] if d["status"] != "unchanged") == ["block", "mlp"]


def test_md_json_html_outputs_are_well_formed(repo, tmp_path):
    path = new_experiment(repo)
    surface_edit(path, "mlp")
    surface_edit(path, "block")
    path.write_text(path.read_text() + '\n\ndef odd(x):\n    return "<&>```"\n')

    json.loads(_invoke(repo, ["diff", "relu-squared", "--format", "json"]).output)

    md = _invoke(repo, ["diff", "relu-squared", "--format", "md"]).output
    assert md.startswith("### `grugctl diff relu-squared against grug_core`")
    assert md.count("<details>") == md.count("</details>") == 3
    fences = re.findall(r"^(`{3,})(diff)?$", md, re.M)
    assert len(fences) == 6 and fences[-1][0] == "````"  # longer than the ``` inside the diff
    assert "| `mlp` | mlp | changed | 1 | 1 |" in md

    out = tmp_path / "report.html"
    result = _invoke(repo, ["diff", "relu-squared", "--format", "html", "--output", str(out)])
    assert result.exit_code == 0 and result.output.strip() == "" or str(out) in result.output
    page = out.read_text()
    root = ElementTree.fromstring(page.split("\n", 1)[1])  # XHTML-clean after the doctype
    assert root.tag == "html"
    assert len(root.findall(".//table[@class='diff']")) == 3
    assert "&lt;&amp;&gt;" in page


def test_unknown_ids_and_buckets_are_one_sentence_exit_2(repo):
    result = _invoke(repo, ["diff", "nope"])
    assert result.exit_code == 2 and "no experiment 'nope'" in result.output
    result = _invoke(repo, ["diff", STARTER_ID, "--bucket", "nope"])
    assert result.exit_code == 2 and "unknown bucket" in result.output
    result = _invoke(repo, ["diff", STARTER_ID, "--format", "xml"])
    assert result.exit_code == 2 and "unknown format 'xml'" in result.output
    result = _invoke(repo, ["diff", STARTER_ID, "--against", "origin"])
    assert result.exit_code == 2 and "no origin" in result.output


def test_new_diff_and_delete_never_import_jax(tmp_path):
    """A fresh interpreter in a temporary repository: new, diff and delete (each for real, committing
    between them as a user would) never load a jax module. (How long they take is bench/cli.py's
    question, not a test's: a timed bound flakes on a loaded machine.)"""
    root = make_repo(tmp_path)
    commands = [
        ["new", "no-jax-probe", "--bucket", "mlp", "--purpose", "Probe."],
        ["diff", "no-jax-probe"],
        ["delete", "no-jax-probe", "--yes"],
    ]
    _, modules = run_commands(root, commands, commit_between=True)
    assert loaded_from(modules, "jax", "jaxlib") == []
    assert archive.load_archive(root / "archive.yaml").experiments["no-jax-probe"].status == "deleted"
