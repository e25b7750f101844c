"""grug_core: the trusted "best guess" JAX transformer that every experiment copies."""
