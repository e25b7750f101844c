"""Suite-wide set-up: one JAX compilation cache for every process the suite starts, and the `slow`
marker.

- The cache: every smoke run, gate and check in the suite compiles the same starter; a persistent cache
  in one fresh folder per session lets the first compile serve the rest (a starter smoke run took
  17.8 s cold and 4.7 s warm on a 2-core Xeon). Fresh per session, so no stale entry outlives a change.
- `slow`: end-to-end tests that train, promote through the full gate or start Ray clusters. `pytest -q`
  deselects them (the developer's loop); `pytest -q --slow` runs everything, as `.ci/run` and the
  README's command 2 do.
"""

import os
import shutil
import tempfile

_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="grugctl-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    # Cache every program, however quick to compile: the suite compiles many small ones many times.
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (as CI does)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an end-to-end test deselected unless --slow is given")


def pytest_unconfigure(config):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
