"""Suite-wide set-up: one JAX compilation cache for every process the suite starts, and the `slow`
marker.

- The cache: every smoke run, gate and check in the suite compiles the same starter, and the core
  tests compile the same tiny models run after run. A persistent cache in the checkout's git-ignored
  `.jax_cache/` lets one compile serve the rest of the session and the next run: the core tests took
  103 s cold and 26 s warm, a starter smoke run 17.8 s and 4.7 s (2-core Xeon). JAX keys each entry on
  the program, the compile options and its own version, so a code change misses rather than reuses;
  the folder is capped (least recently used entries go) and safe to delete.
- `slow`: end-to-end tests that train, promote through the full gate or start Ray clusters. `pytest -q`
  deselects them (the developer's loop); `pytest -q --slow` runs everything, as `.ci/run` and the
  README's command 2 do.
"""

import os
from pathlib import Path

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(Path(__file__).resolve().parents[1] / ".jax_cache")
    # Cache every program, however quick to compile: the suite compiles many small ones many times.
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(512 * 2**20)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (as CI does)")


def pytest_report_header(config):
    if not config.getoption("--slow"):
        return "tests marked slow are left out (training, full promotions, Ray); --slow runs them too"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an end-to-end test deselected unless --slow is given")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
