"""The sharding suite and the starter's mesh checks need 8 devices, which XLA only fakes on the CPU when
the flag is set before JAX starts; so they run in one child pytest process (one JAX start-up)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = [
    Path(__file__).parent / "multidevice" / "sharding_8dev_checks.py",
    Path(__file__).parent / "multidevice" / "starter_mesh_8dev_checks.py",
]


def test_sharding_and_the_starter_on_a_4x2_mesh_of_8_forced_cpu_devices():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=3", *map(str, CHECKS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "12 passed" in result.stdout, result.stdout[-3000:]


def test_mesh_flag_parses_and_names_the_expected_form():
    from grug_core.sharding import parse_mesh

    assert parse_mesh("data=4,model=2") == (4, 2)
    assert parse_mesh(" model = 2 ") == (None, 2)
    assert parse_mesh("data=8") == (8, 1)
    for bad in ("data=0", "data=4,data=2", "4x2", "data=2,"):
        with pytest.raises(ValueError, match="is not of the form data=D,model=M"):
            parse_mesh(bad)
