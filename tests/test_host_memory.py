"""Importing grug_core keeps freed host memory in the process, so XLA:CPU reuses its large buffers instead of
page-faulting fresh ones on every call; GRUG_KEEP_HOST_MEMORY=0 turns that off."""

import json
import os
import statistics
import subprocess
import sys

# Each call returns a new 64 MiB array, far above glibc's largest mmap threshold (32 MiB): without the
# setting every call maps fresh pages for it and unmaps them when the array dies.
FAULTS_PER_CALL = """
import ctypes, json, resource
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KiB pages whatever the host's THP setting
import grug_core
import jax, jax.numpy as jnp
from grug_core.host_memory import keep_freed_host_memory
double = jax.jit(lambda x: x * 2.0 + 1.0)
x = jnp.ones((16 * 2**20,), jnp.float32)
faults = []
for _ in range(60):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    double(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps([keep_freed_host_memory(), faults]))
"""
PAGES_PER_CALL = 16 * 2**20 * 4 // os.sysconf("SC_PAGE_SIZE")


def faults_per_call(keep: str) -> tuple[bool, float]:
    """(whether the setting applied, the median page faults of the last 30 of 60 calls)."""
    # On the CPU, where XLA:CPU allocates the arrays in this process's heap.
    env = {**os.environ, "GRUG_KEEP_HOST_MEMORY": keep, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", FAULTS_PER_CALL], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    applied, faults = json.loads(done.stdout)
    # Kept, the heap grows until it holds every array still waiting to be freed (up to ~20 calls on a
    # busy machine, where frees lag) and faults nothing after that; the median forgives a late straggler.
    return applied, statistics.median(faults[30:])


def test_importing_grug_core_stops_page_faults_on_every_call():
    applied, kept = faults_per_call("1")
    assert applied
    assert kept < 0.1 * PAGES_PER_CALL, f"{kept:.0f} page faults a call with the memory kept"
    # The same program with the setting off faults in (nearly) every page of each new array, so the
    # bound above measures the setting and not the program.
    applied, default = faults_per_call("0")
    assert not applied
    assert default > 0.5 * PAGES_PER_CALL, f"only {default:.0f} faults a call with malloc's defaults"
