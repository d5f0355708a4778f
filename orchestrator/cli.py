"""What every ``python -m orchestrator.*`` command shares: exit codes, pipes, Ctrl-C, FLOPs, tables.

The helpers (:func:`run_cli`, :func:`cli`, :func:`interrupt_hint`, :func:`write_stdout`,
:func:`format_flops`, :func:`flops_unit`, :func:`render_table`) are written once in
:mod:`snnet.cli`: ``python -m snnet.space`` follows the same conventions, and ``snnet`` may not
import ``orchestrator``. This module is where the orchestrator's commands take them from.
"""

from snnet.cli import *  # noqa: F403 - the one implementation, re-exported
from snnet.cli import __all__  # noqa: F401 - re-exported: this module's __all__ is snnet.cli's
