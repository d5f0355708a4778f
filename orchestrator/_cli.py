"""What every ``python -m orchestrator.*`` command shares: exit codes, pipes, Ctrl-C, FLOPs, tables.

The helpers are written once in :mod:`snnet.cli` (``python -m snnet.space`` follows the same
conventions, and ``snnet`` may not import ``orchestrator``); this module is where the
orchestrator's commands take them from.
"""

from snnet.cli import (
    FLOPS_UNITS,
    cli,
    flops_unit,
    format_flops,
    interrupt_hint,
    render_table,
    run_cli,
    write_stdout,
)

__all__ = [
    "FLOPS_UNITS",
    "cli",
    "flops_unit",
    "format_flops",
    "interrupt_hint",
    "render_table",
    "run_cli",
    "write_stdout",
]
