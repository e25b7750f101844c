"""Retiring an experiment: promote.py (splice its change into the core behind the gate), gate.py (the
core tests and the starter's smoke run that promote and check share), lifecycle.py (delete and
restore)."""
