"""grugctl: scaffold, diff, run, promote and check grug_core experiments."""

__version__ = "0.1.0"
