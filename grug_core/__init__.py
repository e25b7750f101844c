"""grug_core: the trusted "best guess" JAX transformer that every experiment copies."""

from grug_core.host_memory import keep_freed_host_memory

# Here, so that it runs before JAX's first computation: see host_memory for why (the starter trains
# 1.24-1.28x faster on XLA:CPU).
keep_freed_host_memory()
