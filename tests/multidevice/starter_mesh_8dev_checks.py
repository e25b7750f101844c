"""The starter speedrun on 8 forced CPU devices, run by tests/test_grugformer_sharding.py in a child
process: its first steps give the same losses on one device and on a 4 x 2 data x model mesh, the
default mesh takes every device the batch splits over, and a mesh that does not fit is refused."""

import importlib.util
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from grug_core.sharding import training_mesh

STARTER = Path(__file__).parents[2] / "experiments/speedrun/grugformer_starter/grugformer_speedrun.py"


def load_starter():
    if "grugformer_speedrun" not in sys.modules:  # dataclasses resolve annotations through sys.modules
        spec = importlib.util.spec_from_file_location("grugformer_speedrun", STARTER)
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules["grugformer_speedrun"]


def run_smoke(tmp_path: Path, mesh: str, steps: int = 3) -> dict:
    out = tmp_path / f"{mesh.replace(',', '_')}.json"
    args = ["--smoke", "--steps", str(steps), "--mesh", mesh, "--out", str(out)]
    assert load_starter().main(args) == 0
    return json.loads(out.read_text())


def test_first_steps_lose_the_same_on_one_device_and_on_a_4x2_mesh(tmp_path):
    single = run_smoke(tmp_path, "data=1,model=1")
    sharded = run_smoke(tmp_path, "data=4,model=2")
    assert single["mesh"] == {"data": 1, "model": 1} and sharded["mesh"] == {"data": 4, "model": 2}
    assert [step for step, _ in sharded["train_curve"]] == [1, 2, 3]
    # train_curve keeps 4 decimals; the evaluated points keep the exact fp32 train and val losses.
    assert sharded["train_curve"] == single["train_curve"]
    assert [point["step"] for point in sharded["curve"]] == [1, 2, 3]  # a shortened run evaluates ~10 times
    for one, many in zip(single["curve"], sharded["curve"], strict=True):
        np.testing.assert_allclose(many["train_loss"], one["train_loss"], rtol=1e-5)
        np.testing.assert_allclose(many["val_loss"], one["val_loss"], rtol=1e-5)
    assert single["curve"][-1]["train_loss"] != single["train_curve"][0][1]  # it did train


def test_default_mesh_takes_every_device_the_batch_splits_over():
    assert dict(training_mesh(32).shape) == {"data": 8, "model": 1}
    assert dict(training_mesh(4).shape) == {"data": 4, "model": 1}
    assert dict(training_mesh(6, model=2).shape) == {"data": 2, "model": 2}
    assert len(jax.devices()) == 8


@pytest.mark.parametrize(
    "mesh, message",
    [
        ("data=8,model=2", "needs 16 devices but only 8 are visible"),
        ("data=3,model=2", "batch size 8 does not split over a data axis of 3"),
        ("data=2,model=4", "parameter .blocks[0].attn.w_k: dimension 1 (size 2)"),
        ("data=2,modle=4", "is not of the form data=D,model=M"),
    ],
)
def test_a_mesh_that_does_not_fit_is_refused_before_training(tmp_path, capsys, mesh, message):
    out = tmp_path / "never.json"
    assert load_starter().main(["--smoke", "--mesh", mesh, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
