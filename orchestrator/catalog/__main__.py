"""``python -m orchestrator.catalog``: query the stitch catalog and plot its FLOPs/accuracy front.

Usage (design brief, section 4)::

    python -m orchestrator.catalog query CATALOG [--sweep S] [--trial T] [--sampling R]
        [--anchors A,B] [--max-flops F] [--max-latency-ms L] [--min-top1 A]
        [--pareto] [--per-trial] [--sort COL] [--desc] [--limit N] [--format table|csv|json]
    python -m orchestrator.catalog plot CATALOG --out FILE.png [--sweep S] [--color-by trial|sampling|sweep]
    python -m orchestrator.catalog check CATALOG [--sweep S] [--quarantine] [--format table|json]
    python -m orchestrator.catalog compare CATALOG --by COLUMN [--sweep S] [--ignore COL]
        [--confidence 0.95] [--resamples 2000] [--seed 0] [--format table|csv|json]

``--max-flops`` takes human values (``1.5G``, ``500M``, ``2e9``). The table goes to stdout and a
one-line count to stderr; ``--format csv`` writes every column (lists as JSON strings) and
``--format json`` one JSON array of objects. No match prints "no stitches match ..." on stderr
and exits 0; a user's mistake prints ``error: <paragraph>`` and exits 2, without a traceback.
Unreadable files in the catalog are skipped with a ``warning:`` line naming each.

``check`` reads every file with its page checksums verified and lists each problem file with
its reason (``--quarantine`` moves them to ``CATALOG/_quarantine/``, never deleting). Its exit
status: 0 when no file has a problem (notes, such as files from a newer schema, do not count),
1 when problem files were found (listed, and moved when ``--quarantine`` was given), 2 for a
user's mistake. ``compare`` (see :mod:`orchestrator.catalog._compare`) exits 2 when the
catalog holds no trials it can compare.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from orchestrator.catalog._compare import compare, format_comparison, parse_options
from orchestrator.catalog._inspect import QUARANTINE, check, quarantine
from orchestrator.catalog._names import validate_name
from orchestrator.catalog._parse import parse_flops, parse_latency, parse_top1
from orchestrator.catalog._plot import plot, plot_path
from orchestrator.catalog._query import check_arguments, query
from orchestrator.catalog._read import (
    LIST_COLUMNS,
    catalog_warnings_to_stderr,
    load,
    native_value,
    scan,
    sweeps,
    to_records,
)
from orchestrator.cli import (
    ArgumentParser,
    did_you_mean,
    flops_unit,
    format_flops,
    plural,
    render_table,
    run_cli,
    write_stdout,
)
from snnet import SNNetError

__all__ = ["build_parser", "format_csv", "format_json", "format_table", "main"]

PROG = "python -m orchestrator.catalog"


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (combined with AND)")
    group.add_argument("--sweep", action="append", metavar="S",
                       help="keep this sweep (repeat or comma-separate for several)")
    group.add_argument("--trial", action="append", metavar="T", help="keep this trial id (repeatable)")
    group.add_argument("--sampling", action="append", metavar="RULE", help="keep this sampling rule (repeatable)")
    group.add_argument("--anchors", metavar="A,B",
                       help="keep stitches whose anchor path includes all of these model names")
    group.add_argument("--max-flops", metavar="F", help="FLOPs budget: 1.5G, 500M, 2e9 or a plain integer")
    group.add_argument("--max-latency-ms", metavar="L",
                       help="latency budget in ms (rows without a measured latency are dropped)")
    group.add_argument("--min-top1", metavar="A", help="minimum top-1 accuracy in percent, 0..100")
    group.add_argument("--repeats", action="store_true",
                       help="keep every trial of a repeated configuration (same settings and seed, e.g. a sweep run "
                            "twice); by default only its newest trial counts")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Query the Parquet stitch catalog and plot its FLOPs/accuracy trade-off.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{query,plot,check,compare}")

    q = commands.add_parser(
        "query", help="print the stitches that match filters and budgets",
        description="Print catalog rows matching the filters, optionally only the Pareto front "
                    "(maximise top-1, minimise FLOPs).",
    )
    q.add_argument("catalog", metavar="CATALOG", help="catalog folder or URI (s3://, gs://)")
    _add_filters(q)
    q.add_argument("--pareto", action="store_true", help="keep only non-dominated stitches (top-1 vs FLOPs)")
    q.add_argument("--per-trial", action="store_true",
                   help="take the Pareto front within each trial (implies --pareto)")
    q.add_argument("--sort", default="flops", metavar="COL", help="column to sort by (default: flops)")
    q.add_argument("--desc", action="store_true", help="sort in descending order")
    q.add_argument("--limit", metavar="N", help="print at most N rows")
    q.add_argument("--format", default="table", choices=["table", "csv", "json"], help="output format (default: table)")

    p = commands.add_parser(
        "plot", help="plot top-1 against FLOPs with the Pareto front into a PNG",
        description="Plot top-1 accuracy against FLOPs for every stitch, anchors marked, Pareto front as a step line.",
    )
    p.add_argument("catalog", metavar="CATALOG", help="catalog folder or URI (s3://, gs://)")
    p.add_argument("--out", required=True, metavar="FILE.png", help="where to write the picture")
    _add_filters(p)
    p.add_argument("--color-by", default="trial", choices=["trial", "sampling", "sweep"],
                   help="what the colours distinguish (default: trial)")
    p.add_argument("--title", help="title (default: the catalog, sweep and row count)")

    c = commands.add_parser(
        "check", help="find damaged, incomplete or duplicate trial files; optionally move them aside",
        description="Read every trial file with its page checksums verified and list each file that readers "
                    "leave out, with the reason. Exit status 0: no problems; 1: problem files found (and moved "
                    "with --quarantine); 2: a usage mistake.",
    )
    c.add_argument("catalog", metavar="CATALOG", help="catalog folder or URI (s3://, gs://)")
    c.add_argument("--sweep", metavar="S", help="check only this sweep")
    c.add_argument("--quarantine", action="store_true",
                   help="move problem files to CATALOG/_quarantine/ (never deletes; DuckDB, pandas and "
                        "pyarrow.dataset then read the catalog again)")
    c.add_argument("--format", default="table", choices=["table", "json"], help="output format (default: table)")

    m = commands.add_parser(
        "compare", help="compare groups of trials that share a stitch space, with bootstrap intervals",
        description="Group trials that share a space by the value of COLUMN (sampling, kernel_size, init, ...) "
                    "and print, per pair of groups, the mean paired top-1 difference over the stitches both "
                    "evaluated, the hypervolume difference, and bootstrap confidence intervals that resample "
                    "stitches and, where a group has several trials (seeds), trials.",
    )
    m.add_argument("catalog", metavar="CATALOG", help="catalog folder or URI (s3://, gs://)")
    m.add_argument("--by", required=True, metavar="COLUMN", help="the per-trial column whose values are compared")
    m.add_argument("--sweep", action="append", metavar="S", help="only trials of this sweep (repeatable)")
    m.add_argument("--ignore", action="append", metavar="COL",
                   help="a setting column to pool over instead of splitting spaces by it (repeatable)")
    m.add_argument("--confidence", default="0.95", metavar="C", help="confidence level (default: 0.95)")
    m.add_argument("--resamples", default="2000", metavar="N", help="bootstrap resamples (default: 2000)")
    m.add_argument("--seed", default="0", metavar="N", help="seed of the bootstrap (default: 0)")
    m.add_argument("--format", default="table", choices=["table", "csv", "json"], help="output format (default: table)")
    return parser


# ---------------------------------------------------------------------------------------------
# output formats
# ---------------------------------------------------------------------------------------------


def _cell(value: Any, fmt: str = "{}") -> str:
    if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)):
        return "-"
    return fmt.format(value)


def format_table(df: pd.DataFrame) -> str:
    """Aligned columns: sweep, trial, stitch, anchors (a>b), cuts, FLOPs, params(M), top1, top5, sampling."""
    flops = [float(f) for f in df["flops"].dropna()] if "flops" in df.columns else []
    _, prefix = flops_unit(max(flops), at_least=0.1) if flops else (1e9, "G")
    unit = f"{prefix}FLOPs"
    show_latency = "latency_ms" in df.columns and bool(df["latency_ms"].notna().any())
    header = ["sweep", "trial_id", "stitch_id", "anchors", "cuts", unit, "params(M)", "top1", "top5"]
    header += ["latency(ms)"] if show_latency else []
    header += ["sampling"]
    right = {"stitch_id", unit, "params(M)", "top1", "top5", "latency(ms)"}
    rows = []
    for row in to_records(df):
        cuts = row.get("cuts") or []
        line = [
            _cell(row.get("sweep")),
            _cell(row.get("trial_id")),
            _cell(row.get("stitch_id")),
            ">".join(row.get("anchors") or []) or "-",
            " ".join(f"[{j},{k}]" for j, k in cuts) if cuts else "-",
            format_flops(row["flops"], prefix, label=False) if row.get("flops") is not None else "-",
            _cell(row["params"] / 1e6, "{:.2f}") if row.get("params") is not None else "-",
            _cell(row.get("top1"), "{:.2f}"),
            _cell(row.get("top5"), "{:.2f}"),
        ]
        if show_latency:
            line.append(_cell(row.get("latency_ms"), "{:.2f}"))
        line.append(_cell(row.get("sampling")))
        rows.append(line)
    return render_table(rows, header=header, right=[h in right for h in header], rule=True) + "\n"


def _jsonable_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with list columns as JSON strings and timestamps in ISO 8601 (for CSV)."""
    out = df.copy()
    for column in out.columns:
        series = out[column]
        if column in LIST_COLUMNS or series.map(lambda v: isinstance(v, (list, tuple))).any():
            out[column] = [None if v is None else json.dumps(v) for v in map(native_value, series)]
        elif isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(series):
            out[column] = [None if pd.isna(v) else v.isoformat() for v in series]
    return out


def format_csv(df: pd.DataFrame) -> str:
    """Every column as CSV (pandas ``to_csv``); lists are JSON strings, timestamps ISO 8601."""
    return _jsonable_frame(df).to_csv(index=False)


def format_json(df: pd.DataFrame) -> str:
    """One JSON array of objects with JSON-native lists; NaN/NA become null."""
    lines = [json.dumps(record, allow_nan=False) for record in to_records(df)]
    return "[\n" + ",\n".join(lines) + "\n]\n"


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """Parse every filter before the catalog is read, so mistakes fail fast."""
    def names(values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        return [n.strip() for v in values for n in v.split(",") if n.strip()] or values
    return {
        "sweep": names(args.sweep),
        "trial": names(args.trial),
        "sampling": names(args.sampling),
        "anchors": args.anchors,
        "max_flops": parse_flops(args.max_flops) if args.max_flops is not None else None,
        "max_latency_ms": parse_latency(args.max_latency_ms) if args.max_latency_ms is not None else None,
        "min_top1": parse_top1(args.min_top1) if args.min_top1 is not None else None,
    }


def _load(catalog: str, filters: dict[str, Any]) -> pd.DataFrame:
    """The rows of the named sweeps and trials (all when none is named): only their files are read."""
    return load(catalog, sweep=filters["sweep"], trial=filters["trial"])


def _scope(filters: dict[str, Any]) -> str:
    """``sweep a, b; trial t0``: what was read, or "" for the whole catalog."""
    return "; ".join(f"{what} {', '.join(filters[what])}" for what in ("sweep", "trial") if filters[what])


def _why_empty(catalog: str, filters: dict[str, Any], total: int) -> str:
    """The "no stitches match" line, with the likeliest reason."""
    if filters["sweep"]:
        present = sweeps(catalog)
        absent = [s for s in filters["sweep"] if s not in present]
        if absent and len(absent) == len(filters["sweep"]):
            listing = ", ".join(present) if present else "none"
            hint = did_you_mean(absent[0], present) if len(absent) == 1 else ""
            return (f"no stitches match: the catalog {catalog} has no sweep {', '.join(map(repr, absent))}"
                    f"{hint} (sweeps present: {listing}).")
    if total == 0:
        good, _ = scan(catalog)
        if not good:
            return (f"no stitches match: the catalog {catalog} holds no readable trial files "
                    "(sweep=<name>/trial-<id>.parquet).")
        if filters["trial"]:
            return f"no stitches match: the catalog {catalog} holds no rows of {_scope(filters)}."
    if filters["trial"]:  # only the named trials were read
        return (f"no stitches match the filters ({total} stitch{'es' if total != 1 else ''} of "
                f"{_scope(filters)} before the other filters).")
    return f"no stitches match the filters ({total} stitch{'es' if total != 1 else ''} before filtering)."


def _cmd_query(args: argparse.Namespace) -> int:
    filters = _filters(args)
    limit = check_arguments(sort=args.sort, limit=args.limit, **filters)["limit"]  # before reading anything
    df = _load(args.catalog, filters)
    result = query(df, **filters, pareto=args.pareto, per_trial=args.per_trial, sort=args.sort,
                   descending=args.desc, limit=limit, repeats=args.repeats)
    if result.empty:
        print(_why_empty(args.catalog, filters, len(df)), file=sys.stderr)
        return 0
    render = {"table": format_table, "csv": format_csv, "json": format_json}[args.format]
    if not write_stdout(render(result)):
        return 0
    if args.format == "table":
        what = "Pareto-optimal stitches" if (args.pareto or args.per_trial) else "stitches"
        print(f"{len(result)} {what} shown, of {len(df)} in the catalog"
              f"{f' ({_scope(filters)})' if _scope(filters) else ''}.{_repeats_line(result)}", file=sys.stderr)
    return 0


def _repeats_line(result: pd.DataFrame) -> str:
    """" Left out: ..." when trials repeating a newer trial's configuration were not counted, else ""."""
    dropped = result.attrs.get("repeats_dropped", 0)
    if not dropped:
        return ""
    return (f" Left out: {plural(dropped, 'trial')} repeating the settings and seed of a newer trial (the same "
            "sweep run again?), so each configuration counts once; --repeats keeps them, `check` lists them.")


def _cmd_plot(args: argparse.Namespace) -> int:
    filters = _filters(args)
    check_arguments(**filters)  # before reading anything
    args.out = plot_path(args.out)
    df = _load(args.catalog, filters)
    result = query(df, **filters, repeats=args.repeats)
    if result.empty:
        print(_why_empty(args.catalog, filters, len(df)) + " Nothing to plot.", file=sys.stderr)
        return 0
    out = plot(result, args.out, color_by=args.color_by, title=args.title,
               catalog=args.catalog)
    line = _repeats_line(result)
    print(f"wrote {out} ({len(result)} stitches)" + (f".{line}" if line else ""), file=sys.stderr)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    if args.sweep is not None:  # a typo would otherwise check nothing and report no problems
        present = sweeps(args.catalog)
        if validate_name("sweep", args.sweep) not in present:
            raise SNNetError(f"The catalog {args.catalog} has no sweep {args.sweep!r}"
                             f"{did_you_mean(args.sweep, present)} (sweeps present: "
                             f"{', '.join(present) if present else 'none'}); nothing to check.")
    result = check(args.catalog, args.sweep)
    moved: dict[str, str] = {}
    failure = None
    if args.quarantine and result.problems:
        try:
            moved = {source: target for source, target in quarantine(result)}
        except (pa.ArrowException, OSError) as e:
            failure = f"could not move every problem file to the quarantine ({e})"
            for problem in result.problems:  # whatever did move is gone from where it was
                info = result.filesystem.get_file_info(problem.path)
                if info.type.name == "NotFound":
                    moved.setdefault(problem.path, "?")
    where = result.shown(f"{result.base}/{QUARANTINE}/")
    if args.format == "json":
        text = json.dumps({
            "catalog": args.catalog, "files": len(result.files),
            "problems": [{"path": result.shown(p.path), "kind": p.kind, "reason": p.reason,
                          "moved_to": result.shown(moved[p.path]) if p.path in moved else None}
                         for p in result.problems],
            "notes": [{"path": result.shown(n.path), "kind": n.kind, "reason": n.reason} for n in result.notes],
        }, indent=1) + "\n"
    else:
        lines = [f"problem: {result.shown(p.path)}: {p.reason}" for p in result.problems]
        lines += [f"note: {result.shown(n.path)}: {n.reason}" for n in result.notes]
        lines += [f"moved: {result.shown(a)} -> {result.shown(b)}" for a, b in moved.items() if b != "?"]
        text = "".join(line + "\n" for line in lines)
    if text and not write_stdout(text):
        return 1 if result.problems else 0
    files = plural(len(result.files), "trial file")
    if failure:
        print(f"error: {failure}", file=sys.stderr)
    elif not result.problems:
        print(f"checked {files} in {args.catalog}: no problems"
              f"{f', {len(result.notes)} note(s)' if result.notes else ''}.", file=sys.stderr)
    elif args.quarantine:
        print(f"checked {files} in {args.catalog}: moved {len(moved)} problem file(s) to {where} "
              "(nothing was deleted; to restore one, move it back and drop the .quarantined suffix).",
              file=sys.stderr)
    else:
        print(f"checked {files} in {args.catalog}: {len(result.problems)} problem file(s), which every reader "
              f"of this package leaves out. Run again with --quarantine to move them to {where} "
              "(nothing is deleted) so DuckDB, pandas and pyarrow.dataset read the catalog again.", file=sys.stderr)
    return 1 if result.problems else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    options = parse_options(confidence=args.confidence, resamples=args.resamples, seed=args.seed)
    sweeps_wanted = [n.strip() for v in args.sweep or [] for n in v.split(",") if n.strip()] or None
    ignore = [n.strip() for v in args.ignore or [] for n in v.split(",") if n.strip()]
    result = compare(args.catalog, args.by, sweep=sweeps_wanted, ignore=ignore, **options)
    write_stdout(format_comparison(result, args.format))
    return 0


_COMMANDS = {"query": _cmd_query, "plot": _cmd_plot, "check": _cmd_check, "compare": _cmd_compare}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; a user's mistake is one ``error:`` paragraph and exit 2 (:func:`orchestrator.cli.run_cli`)."""
    args = build_parser().parse_args(argv)
    with catalog_warnings_to_stderr():
        return run_cli(lambda _argv: _COMMANDS[args.command](args), argv)


if __name__ == "__main__":
    sys.exit(main())
