"""The sharding suite needs 8 devices, which XLA only fakes on the CPU when the flag is set before JAX
starts; so it runs in a child pytest process."""

import os
import subprocess
import sys
from pathlib import Path

CHECKS = Path(__file__).parent / "multidevice" / "sharding_8dev_checks.py"


def test_sharding_on_a_4x2_mesh_of_8_forced_cpu_devices():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "5 passed" in result.stdout
