"""What every ``python -m orchestrator.*`` command shares: exit codes, pipes, Ctrl-C, FLOPs, tables.

The helpers (:func:`run_cli`, :func:`cli`, :func:`interrupt_hint`, :func:`write_stdout`,
:func:`format_flops`, :func:`flops_unit`, :func:`render_table`) are written once in
:mod:`snnet.cli`: ``python -m snnet.space`` follows the same conventions, and ``snnet`` may not
import ``orchestrator``. This module is where the orchestrator's commands take them from.
"""

from snnet.cli import *  # noqa: F403 - the one implementation, re-exported
from snnet.cli import __all__  # noqa: F401 - re-exported: this module's __all__ is snnet.cli's

# -- the flags several commands take ---------------------------------------------------------------

#: Each shared flag's ``add_argument`` keywords, its dest and help written here once; a command picks
#: the ones it takes with :func:`shared_flags` and may give its own defaults (and a sharper help).
SHARED_FLAGS = {
    "space": {"help": "a shipped search space (see search_spaces/) or a YAML path"},
    "set": {"dest": "overrides", "action": "append", "default": [], "metavar": "PATH=VALUE",
            "help": "override a setting by its dotted path (training.epochs=1, dataset=/data/x, "
                    "resources.workers_per_trial=1); repeatable"},
    "catalog": {"help": "catalog folder or URI (s3://, gs://)"},
    "sweep": {"help": "the catalog partition (sweep) to write into or read"},
    "address": {"default": None, "help": "Ray cluster address (default: $RAY_ADDRESS or local)"},
    "storage": {"dest": "storage_path", "help": "Ray run storage (checkpoints): folder or URI; default: runs beside "
                                                "the catalog, in the same folder or bucket"},
}

# Not in __all__ (tests/test_cli_io_helpers.py: __all__ is snnet.cli's, re-exported): imported by name.


def shared_flags(*names: str, helps: dict[str, str] | None = None, **defaults):
    """A parent parser (``add_help=False``; pass it as ``parents=[...]``) holding the shared flags
    ``names`` (keys of :data:`SHARED_FLAGS`, in that order). ``defaults`` (by flag name) replace a
    flag's default (``argparse.SUPPRESS``: left out of the namespace unless given), ``helps`` its help."""
    unknown = [n for n in [*names, *defaults, *(helps or {})] if n not in SHARED_FLAGS]
    if unknown:
        raise ValueError(f"shared_flags knows {', '.join(SHARED_FLAGS)}; got {', '.join(unknown)}")
    parser = ArgumentParser(add_help=False)  # noqa: F405 - snnet.cli's parser, re-exported above
    for name in names:
        keywords = {**SHARED_FLAGS[name], **({"default": defaults[name]} if name in defaults else {})}
        if helps and name in helps:
            keywords["help"] = helps[name]
        parser.add_argument(f"--{name}", **keywords)
    return parser
