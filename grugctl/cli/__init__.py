"""grugctl's command line: parse, call one domain function, render. Never imports JAX.

common.py holds what every command shares; each *_command(s).py module registers its commands on the
app when imported, so the imports below are in the order `grugctl --help` lists the commands.
"""

# isort: off
from grugctl.cli.common import app
from grugctl.cli import archive_commands, experiment_commands, lifecycle_commands  # noqa: F401
from grugctl.cli import run_commands, export_command, check_command  # noqa: F401
from grugctl.cli import report_command  # noqa: F401

# isort: on

__all__ = ["app"]
