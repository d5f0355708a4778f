"""The catalog's query and plot layer: Pareto fronts, filters, budgets, robust reading, CLI, plots.

Catalogs are built in tmp_path with :class:`CatalogWriter` from hand-made rows; no Ray, no
training. The Pareto front is checked against a brute-force O(n^2) scan and against DuckDB
reading the same files on its own.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import warnings
from io import StringIO

import pandas as pd
import pytest
from conftest import import_blocker

from orchestrator.catalog import (
    CatalogWarning,
    CatalogWriter,
    best_under,
    load,
    pareto_front,
    parse_flops,
    plot,
    query,
    scan,
    sweeps,
)
from orchestrator.catalog.__main__ import main
from orchestrator.catalog._parse import parse_latency, parse_top1
from snnet import SNNetError

ANCHORS = {  # name: (flops, params, top1), roughly DeiT-Ti/S/B
    "deit_tiny_patch16_224": (1_258_000_000, 5_717_000, 72.1),
    "deit_small_patch16_224": (4_608_000_000, 22_050_000, 79.8),
    "deit_base_patch16_224": (17_582_000_000, 86_568_000, 81.8),
}
KEY = ["sweep", "trial_id", "stitch_id"]


def make_rows(seed: int, sampling: str, offset: float = 0.0, latency: bool = False) -> list[dict]:
    """Three anchors plus Ti>S and S>B stitches whose top-1 interpolates with noise."""
    rng = random.Random(seed)
    names = list(ANCHORS)
    rows = []
    common = dict(kernel_size=2, stride=1, sampling=sampling, device="cpu", dataset="imagenet-val",
                  checkpoint=f"file:///ckpt/{seed}", init="ls", epochs=3, seed=seed, workers=2)
    for sid, name in enumerate(names):
        flops, params, top1 = ANCHORS[name]
        rows.append(dict(common, stitch_id=sid, anchors=[name], cuts=[], flops=flops, params=params,
                         top1=round(top1 + rng.uniform(-0.2, 0.2), 2), top5=95.0, layers=[],
                         latency_ms=round(flops / 1e9 * 1.5, 3) if latency else None))
    sid = len(names)
    for a, b in zip(names, names[1:]):
        (fa, pa, ta), (fb, pb, tb) = ANCHORS[a], ANCHORS[b]
        for j in range(1, 12):
            w = j / 12
            flops = int(fb + (fa - fb) * w)
            top1 = round(tb + (ta - tb) * w ** 0.8 + offset + rng.uniform(-0.8, 0.4), 2)
            rows.append(dict(common, stitch_id=sid, anchors=[a, b], cuts=[[j, j + 1]], flops=flops,
                             params=int(pb + (pa - pb) * w), top1=top1, top5=round(min(99.9, top1 + 15), 2),
                             layers=[f"{a}:{j}->{b}:{j + 1}"], ls_r2=0.9,
                             latency_ms=round(flops / 1e9 * 1.5, 3) if latency else None))
            sid += 1
    return rows


TRIALS = {  # (sweep, trial): rows
    ("deit-tsb", "t0"): make_rows(0, "uniform"),
    ("deit-tsb", "t1"): make_rows(1, "sandwich", 0.3),
    ("deit-tsb", "t2"): make_rows(2, "balanced", -0.2, latency=True),
    ("ablation", "lr-1e-4"): make_rows(3, "uniform", -0.5),
    # an exact re-run of t1 in another sweep: identical (flops, top1) on the front, all kept
    ("ablation", "rerun"): make_rows(1, "sandwich", 0.3),
}
TRIALS[("deit-tsb", "t0")][5]["top1"] = None  # a stitch whose evaluation failed
N_ROWS = sum(len(r) for r in TRIALS.values())


def write_catalog(root) -> str:
    for (sweep, trial), rows in TRIALS.items():
        CatalogWriter(root, sweep).write_trial(trial, rows)
    return str(root)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> str:
    return write_catalog(tmp_path_factory.mktemp("catalog"))


@pytest.fixture(scope="module")
def df(catalog) -> pd.DataFrame:
    return load(catalog)


def keys(frame: pd.DataFrame) -> set[tuple]:
    return {(s, t, int(i)) for s, t, i in zip(frame["sweep"], frame["trial_id"], frame["stitch_id"])}


def brute_front(rows: list[tuple]) -> set[tuple]:
    """O(n^2): rows are (key, flops, top1); a row is dominated if another is >= and <= with one strict."""
    rows = [r for r in rows if r[2] is not None and not math.isnan(r[2])]
    out = set()
    for k, f, t in rows:
        if not any(t2 >= t and f2 <= f and (t2 > t or f2 < f) for _, f2, t2 in rows):
            out.add(k)
    return out


def frame_rows(frame: pd.DataFrame) -> list[tuple]:
    return [((s, t, int(i)), float(f), None if pd.isna(a) else float(a))
            for s, t, i, f, a in zip(frame["sweep"], frame["trial_id"], frame["stitch_id"], frame["flops"],
                                     frame["top1"])]


CLI = [sys.executable, "-m", "orchestrator.catalog"]


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, **kwargs)


def call_main(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("1.5G", 1_500_000_000), ("500M", 500_000_000), ("2e9", 2_000_000_000), ("1500000000", 1_500_000_000),
    ("1_000", 1000), (" 3 g ", 3_000_000_000), ("1.5GFLOPs", 1_500_000_000), ("750k", 750_000),
    ("0.25T", 250_000_000_000), ("0", 0), (2_000_000, 2_000_000), (2.5e9, 2_500_000_000),
])
def test_parse_flops(text, value):
    assert parse_flops(text) == value


@pytest.mark.parametrize("text", ["-1G", "-5", "1.5X", "", "G", "abc", "1.2.3G", float("nan"), float("inf"), True, -3])
def test_parse_flops_rejects(text):
    with pytest.raises(SNNetError, match="FLOPs budget"):
        parse_flops(text)


@pytest.mark.parametrize("huge", ["1e400", "1e999999999", "9.3e18", "1e10P", pytest.param(10**400, id="10**400"),
                                  pytest.param(2**63, id="2**63"), 1e300])
def test_parse_flops_rejects_budgets_beyond_int64(huge):
    # a float of a huge int raised OverflowError, and Decimal's context decimal.Overflow
    with pytest.raises(SNNetError, match=r"FLOPs budget .* at most 2\^63 - 1 .* leave the budget out for no limit"):
        parse_flops(huge)
    assert parse_flops(2**63 - 1) == parse_flops("9223372036854775807") == 2**63 - 1


def test_parse_top1_and_latency():
    assert parse_top1("75") == 75.0 and parse_top1("79.5%") == 79.5 and parse_top1(0) == 0.0
    assert parse_latency("2.5ms") == 2.5 and parse_latency(5) == 5.0
    for bad in ("101", "-1", "nan", "x", 100.5):
        with pytest.raises(SNNetError, match="between 0 and 100"):
            parse_top1(bad)
    for bad in ("-0.1", "inf", "fast"):
        with pytest.raises(SNNetError, match="non-negative number of milliseconds"):
            parse_latency(bad)


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def test_load_reads_every_row(catalog, df):
    assert len(df) == N_ROWS
    assert sweeps(catalog) == ["ablation", "deit-tsb"]
    assert list(df.columns[:3]) == KEY
    row = df[(df.trial_id == "t0") & (df.stitch_id == 3)].iloc[0]
    assert row["anchors"] == ["deit_tiny_patch16_224", "deit_small_patch16_224"]
    assert row["cuts"] == [[1, 2]]
    assert row["sweep"] == "deit-tsb" and row["sampling"] == "uniform"
    assert len(load(catalog, sweep="ablation")) == 2 * len(TRIALS[("ablation", "rerun")])
    good, bad = scan(catalog)
    assert len(good) == len(TRIALS) and bad == []


@pytest.mark.parametrize("where", ["missing", "file"])
def test_not_a_catalog(tmp_path, where):
    path = tmp_path / "nope"
    if where == "file":
        path.write_text("x")
    kind = "a file" if where == "file" else "missing"
    for call in (scan, load, query):
        with pytest.raises(SNNetError, match=f"not a stitch catalog: it is {kind}"):
            call(str(path))


def test_one_sweeps_folder_given_as_the_catalog_names_the_catalog_and_sweep(catalog, capsys):
    """Every file in a sweep's folder lies outside a sweep= folder of *that* path: instead of one
    warning per file and no rows, one error names the catalog and the --sweep to pass."""
    folder = sorted(p for p in os.listdir(catalog) if p.startswith("sweep="))[0]
    for path in (f"{catalog}/{folder}", f"{catalog}/{folder}/"):
        for call in (scan, load, query, sweeps):
            with pytest.raises(SNNetError, match=f"one sweep's folder of a catalog, not a catalog: give the "
                                                 f"catalog itself, '{catalog}', and --sweep {folder[6:]} "):
                call(path)
    assert call_main(capsys, "query", f"{catalog}/{folder}")[0] == 2


def test_corrupt_and_hidden_files_are_skipped(catalog, tmp_path):
    root = tmp_path / "cat"
    shutil.copytree(catalog, root)
    folder = root / "sweep=deit-tsb"
    (folder / "trial-bad.parquet").write_bytes(b"\x00garbage, not parquet\xff" * 50)
    whole = (folder / "trial-t2.parquet").read_bytes()
    (folder / "trial-half.parquet").write_bytes(whole[: len(whole) // 2])  # a half-copied file
    (folder / ".trial-x.0123.tmp").write_bytes(b"in flight")  # a writer in flight: ignored
    (folder / "_SUCCESS").write_bytes(b"")  # a marker: ignored
    (root / "README.txt").write_text("not part of the catalog")  # not *.parquet: ignored

    good, bad = scan(str(root))
    assert len(good) == len(TRIALS)
    assert sorted(os.path.basename(p) for p, _ in bad) == ["trial-bad.parquet", "trial-half.parquet"]
    assert all("Parquet" in reason for _, reason in bad)
    with pytest.warns(CatalogWarning, match=r"trial-(bad|half)\.parquet") as record:
        frame = load(str(root))
    assert sorted(os.path.basename(str(w.message).split(":")[0].split()[-1]) for w in record) == \
        ["trial-bad.parquet", "trial-half.parquet"]
    assert len(frame) == N_ROWS
    with pytest.warns(CatalogWarning, match=r"trial-(bad|half)\.parquet"):
        assert len(query(str(root), pareto=True)) > 0

    result = run_cli("query", str(root), "--sweep", "deit-tsb", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "warning:" in result.stderr and "trial-bad.parquet" in result.stderr
    assert "trial-half.parquet" in result.stderr
    assert len(json.loads(result.stdout)) == sum(len(r) for (s, _), r in TRIALS.items() if s == "deit-tsb")


def test_file_missing_a_required_column_is_skipped(catalog, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "cat"
    shutil.copytree(catalog, root)
    pq.write_table(pa.table({"x": [1, 2]}), root / "sweep=ablation" / "trial-other.parquet")
    good, bad = scan(str(root))
    assert [os.path.basename(p) for p, _ in bad] == ["trial-other.parquet"]
    assert "lacks the column(s) trial_id" in bad[0][1]
    with pytest.warns(CatalogWarning, match="trial-other.parquet"):
        assert len(load(str(root))) == N_ROWS


# ---------------------------------------------------------------------------------------------
# Pareto front
# ---------------------------------------------------------------------------------------------


def duckdb_front(root: str, per_trial: bool = False) -> set[tuple]:
    import duckdb

    same_trial = "AND b.sweep = a.sweep AND b.trial_id = a.trial_id" if per_trial else ""
    sql = f"""
        WITH t AS (SELECT sweep, trial_id, stitch_id, flops, top1
                   FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true))
        SELECT a.sweep, a.trial_id, a.stitch_id FROM t a
        WHERE a.top1 IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM t b
            WHERE b.top1 >= a.top1 AND b.flops <= a.flops AND (b.top1 > a.top1 OR b.flops < a.flops) {same_trial})
    """
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 1")
        return {(s, t, int(i)) for s, t, i in con.execute(sql).fetchall()}
    finally:
        con.close()


def test_pareto_matches_brute_force_and_duckdb(catalog, df):
    front = pareto_front(df)
    expected = brute_front(frame_rows(df))
    assert keys(front) == expected
    assert keys(front) == duckdb_front(catalog)
    assert len(front) == len(expected)  # no duplicates
    assert keys(query(catalog, pareto=True)) == expected
    # ties: the exact re-run puts identical (flops, top1) rows of two trials on the front
    assert {t for _, t, _ in expected} >= {"t1", "rerun"}
    # sorted by FLOPs, top-1 rising along the front
    assert list(front["flops"]) == sorted(front["flops"])
    assert all(b >= a for a, b in zip(front["top1"], front["top1"][1:]))


def test_pareto_per_trial_matches_brute_force_and_duckdb(catalog, df):
    front = pareto_front(df, per_trial=True)
    expected = set()
    for _, group in df.groupby(["sweep", "trial_id"]):
        expected |= brute_front(frame_rows(group))
    assert keys(front) == expected == duckdb_front(catalog, per_trial=True)
    assert keys(query(df, per_trial=True)) == expected  # per_trial implies pareto


def test_pareto_ties_and_missing_values():
    frame = pd.DataFrame({
        "sweep": ["s"] * 7,
        "trial_id": list("abcdefg"),
        "stitch_id": range(7),
        "flops": [10, 10, 10, 20, 20, 30, 5],
        "top1": [70.0, 70.0, 65.0, 70.0, 75.0, math.nan, 60.0],
    })
    front = pareto_front(frame)
    # a and b tie exactly (both kept); c is beaten at equal FLOPs; d has equal top-1 at more FLOPs;
    # f has no top-1; g is cheapest
    assert list(front["trial_id"]) == ["g", "a", "b", "e"]
    assert pareto_front(frame.iloc[:0]).empty


@pytest.mark.parametrize("seed", range(5))
def test_pareto_random_with_many_ties(seed):
    rng = random.Random(seed)
    n = 120
    frame = pd.DataFrame({
        "sweep": ["s"] * n,
        "trial_id": [f"t{rng.randrange(3)}" for _ in range(n)],
        "stitch_id": range(n),
        "flops": [rng.randrange(1, 12) * 10**8 for _ in range(n)],
        "top1": [rng.choice([50.0, 55.0, 60.0, 65.0, 70.0, math.nan]) for _ in range(n)],
    })
    assert keys(pareto_front(frame)) == brute_front(frame_rows(frame))
    expected = set()
    for _, group in frame.groupby("trial_id"):
        expected |= brute_front(frame_rows(group))
    assert keys(pareto_front(frame, per_trial=True)) == expected


# ---------------------------------------------------------------------------------------------
# filters and budgets
# ---------------------------------------------------------------------------------------------


def test_filters_and_budgets(catalog, df):
    got = query(df, sweep="deit-tsb", max_flops="5G", min_top1=78)
    want = df[(df.sweep == "deit-tsb") & (df.flops <= 5e9) & (df.top1 >= 78)]
    assert keys(got) == keys(want) and len(got) > 0
    assert list(got["flops"]) == sorted(got["flops"])

    assert set(query(df, trial=["t0", "rerun"])["trial_id"]) == {"t0", "rerun"}
    assert set(query(df, sampling="uniform")["trial_id"]) == {"t0", "lr-1e-4"}
    assert set(query(df, sweep="ablation,deit-tsb")["sweep"]) == {"ablation", "deit-tsb"}

    through_base = query(df, anchors="deit_base_patch16_224")
    assert len(through_base) and all("deit_base_patch16_224" in a for a in through_base["anchors"])
    pair = query(df, anchors="deit_tiny_patch16_224>deit_small_patch16_224")
    assert len(pair) == 11 * len(TRIALS)

    timed = query(df, max_latency_ms=7)  # only t2 measured latency; unmeasured rows cannot fit
    assert set(timed["trial_id"]) == {"t2"} and (timed["latency_ms"] <= 7).all()

    cheap = query(df, max_flops=1_258_000_000)
    assert set(map(tuple, cheap["anchors"])) == {("deit_tiny_patch16_224",)}
    assert query(df, max_flops=0).empty

    top = query(df, sort="top1", descending=True, limit=3)
    assert len(top) == 3 and list(top["top1"]) == sorted(df["top1"].dropna(), reverse=True)[:3]
    assert list(top.index) == [0, 1, 2]

    under = query(df, max_flops="3G", pareto=True)
    assert keys(under) == brute_front(frame_rows(df[df.flops <= 3e9]))

    # a catalog path works as well as a DataFrame, and the sweep is pruned while reading
    assert keys(query(catalog, sweep="deit-tsb", min_top1=80)) == keys(query(df, sweep="deit-tsb", min_top1=80))


def test_a_budget_over_sweeps_of_one_family_is_not_refused():
    """A trial's family is the union of anchors over all its rows, not over those within the budget:
    sweep b, none of whose A>B stitches fits, is still of the family A, B."""
    def trial(sweep, flops_of_stitches, anchors=("A", "B")):
        a, b = anchors
        paths = [[a], [b]] + [[a, b]] * len(flops_of_stitches)
        flops = [100, 1000] + flops_of_stitches
        return pd.DataFrame({"sweep": sweep, "trial_id": "t0", "stitch_id": range(len(paths)), "anchors": paths,
                             "flops": flops, "top1": [60.0 + i for i in range(len(paths))], "dataset": "imagenet"})

    same = pd.concat([trial("a", [300, 600]), trial("b", [700, 900])], ignore_index=True)
    fitting = query(same, max_flops=650)
    assert keys(fitting) == {("a", "t0", 0), ("a", "t0", 2), ("a", "t0", 3), ("b", "t0", 0)}
    assert tuple(best_under(same, max_flops=650)[KEY]) == ("a", "t0", 3)
    other = pd.concat([trial("a", [300, 600]), trial("b", [700, 900], anchors=("P", "Q"))], ignore_index=True)
    with pytest.raises(SNNetError, match="would mix families of anchors"):
        query(other, max_flops=650)


def test_best_under(df):
    best = best_under(df, max_flops="3G")
    fitting = df[(df.flops <= 3e9) & df.top1.notna()]
    assert best["top1"] == fitting["top1"].max()
    assert best["flops"] == fitting[fitting.top1 == fitting.top1.max()]["flops"].min()
    assert best_under(df, max_flops="1M") is None
    assert best_under(df, max_latency_ms=3)["trial_id"] == "t2"
    assert best_under(df)["top1"] == df["top1"].max()


def test_best_under_chooses_on_the_selection_split_and_falls_back_to_top1_saying_so():
    """top1_selection (held out of training) chooses where every candidate has it; top1 (the
    evaluation split, what one reports) chooses otherwise, for all candidates alike, with a note."""
    frame = pd.DataFrame({"sweep": "s", "trial_id": "t", "stitch_id": [0, 1, 2, 3], "anchors": [["A"]] * 4,
                          "flops": [100, 200, 300, 400], "top1": [70.0, 80.0, 75.0, 90.0],
                          "top1_selection": [72.0, 71.0, 79.0, None], "dataset": "d"})
    best = best_under(frame, max_flops=300)
    assert best["stitch_id"] == 2 and best.attrs == {"chosen_by": "top1_selection", "note": None}
    for mixed in (frame, frame.drop(columns="top1_selection")):  # stitch 3 lacks it; an older catalog has none
        best = best_under(mixed, max_flops=400)
        assert best["stitch_id"] == 3 and best.attrs["chosen_by"] == "top1"
        lacking = 1 if "top1_selection" in mixed.columns else 4
        assert best.attrs["note"] == (
            f"chosen on top1, the evaluation split: {lacking} of the 4 candidate row(s) have no top1_selection "
            "(a catalog written before it existed, or trials run with training.selection_fraction: 0)")
    tie = frame.assign(top1_selection=[75.0, 75.0, 60.0, 60.0])
    assert best_under(tie, max_flops=400)["stitch_id"] == 0  # a tie goes to fewer FLOPs, not to the reported top1


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_flops=-1), "FLOPs budget"),
    (dict(max_flops="-1G"), "negative"),
    (dict(max_latency_ms=-2), "latency budget"),
    (dict(min_top1=101), "between 0 and 100"),
    (dict(min_top1=-0.5), "between 0 and 100"),
    (dict(sort="accuracy"), "Unknown sort column 'accuracy'"),
    (dict(sort="top_1"), r"Unknown sort column 'top_1' \(did you mean 'top1'\?\)\. Sort by one of"),
    (dict(sort="anchors"), "holds lists"),
    (dict(limit=0), "positive whole number"),
    (dict(trial=[]), "at least one name"),
])
def test_bad_query_inputs(df, kwargs, message):
    with pytest.raises(SNNetError, match=message):
        query(df, **kwargs)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def test_cli_user_errors_exit_2_without_traceback(catalog, tmp_path):
    cases = [
        (["query", catalog, "--max-flops=-1G"], "FLOPs budget"),
        (["query", catalog, "--min-top1", "101"], "between 0 and 100"),
        (["query", str(tmp_path / "missing"), "--pareto"], "not a stitch catalog"),
    ]
    procs = [subprocess.Popen([*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv, _ in cases]  # all at once: the interpreter start dominates
    for (argv, message), proc in zip(cases, procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (argv, err)
        assert err.startswith("error: ") and message in err, (argv, err)
        assert "Traceback" not in err and out == ""
        assert err.count("\n") == 1  # one paragraph


def test_cli_more_user_errors(catalog, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        (["query", catalog, "--max-flops", "1.5X"], "FLOPs budget"),
        (["query", catalog, "--max-latency-ms", "-1"], "latency budget"),
        (["query", catalog, "--sort", "nope"], "Unknown sort column"),
        (["query", catalog, "--limit", "0"], "positive whole number"),
        (["query", catalog, "--limit", "ten"], "positive whole number"),
        (["query", catalog, "--sweep", "../etc"], "sweep name"),
        (["query", str(a_file)], "it is a file"),
        (["plot", catalog, "--out", str(tmp_path / "no" / "dir.png")], "does not exist"),
    ]
    for argv, message in cases:
        code, out, err = call_main(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (argv, err)
        assert out == ""


def test_cli_checks_every_argument_before_reading_the_catalog(catalog, capsys, monkeypatch):
    """A mistake in --sort, --limit, --anchors, ... fails at once, not after reading a large catalog."""
    import orchestrator.catalog._read as query_module

    def no_read(*args, **kwargs):
        raise AssertionError("the catalog was read before the arguments were checked")

    monkeypatch.setattr(query_module, "inspect", no_read)
    cases = [
        (["query", catalog, "--sort", "top_1"], "Unknown sort column 'top_1'"),
        (["query", catalog, "--sort", "anchors"], "holds lists"),
        (["query", catalog, "--limit", "0"], "positive whole number"),
        (["query", catalog, "--anchors", ""], "anchors filter needs at least one name"),
        (["query", catalog, "--anchors", ",", "--sweep", "deit-tsb"], "anchors filter needs at least one name"),
        (["query", catalog, "--trial", ","], "trial filter needs at least one name"),
        (["query", catalog, "--sweep", "deit-tsb,../etc"], "sweep name"),
        (["query", catalog, "--max-flops", "1e400"], "at most 2^63 - 1"),
        (["query", catalog, "--max-flops", "1e999999999"], "at most 2^63 - 1"),
        (["plot", catalog, "--out", "x.png", "--anchors", ""], "anchors filter needs at least one name"),
    ]
    for argv, message in cases:
        code, out, err = call_main(capsys, *argv)
        assert code == 2 and out == "", (argv, err)
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (argv, err)


def test_only_the_named_sweeps_are_read_and_counted(catalog, df, tmp_path, capsys):
    root = tmp_path / "cat"
    shutil.copytree(catalog, root)
    CatalogWriter(root, "extra").write_trial("x0", make_rows(9, "uniform"))
    (root / "sweep=extra" / "trial-bad.parquet").write_bytes(b"not parquet" * 20)
    named = ["ablation", "deit-tsb"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CatalogWarning)  # sweep=extra's damaged file is not even opened
        got = query(str(root), sweep=named, trial=["t0", "rerun"], pareto=True)
        assert len(load(str(root), sweep=named)) == N_ROWS
    pd.testing.assert_frame_equal(got, query(df, sweep=named, trial=["t0", "rerun"], pareto=True))

    code, out, err = call_main(capsys, "query", str(root), "--sweep", "ablation,deit-tsb", "--limit", "3")
    assert code == 0 and len(out.splitlines()) == 2 + 3
    assert err == f"3 stitches shown, of {N_ROWS} in the catalog (sweep ablation, deit-tsb).\n"
    code, out, err = call_main(capsys, "query", str(root), "--sweep", "ablation", "--sweep", "nope", "--limit", "1")
    n_ablation = sum(len(r) for (s, _), r in TRIALS.items() if s == "ablation")
    assert code == 0 and err == f"1 stitches shown, of {n_ablation} in the catalog (sweep ablation, nope).\n"


def test_a_trial_filter_reads_only_the_files_that_may_hold_those_trials(catalog, df, tmp_path, capsys, monkeypatch):
    import orchestrator.catalog._inspect as inspect_module

    root = tmp_path / "cat"
    shutil.copytree(catalog, root)
    shutil.copy(root / "sweep=deit-tsb" / "trial-t0.parquet", root / "sweep=deit-tsb" / "trial-t0-copy.parquet")
    read, real_read = [], inspect_module._read

    def spy(filesystem, base, files):
        read.extend(files)
        return real_read(filesystem, base, files)

    monkeypatch.setattr(inspect_module, "_read", spy)
    with pytest.warns(CatalogWarning, match=r"trial-t0-copy\.parquet: it repeats"):  # the copy is still found
        got = query(str(root), trial="t0,rerun", sort="top1")
    assert sorted(os.path.relpath(p, root) for p in read) == [
        "sweep=ablation/trial-rerun.parquet", "sweep=deit-tsb/trial-t0-copy.parquet", "sweep=deit-tsb/trial-t0.parquet"]
    pd.testing.assert_frame_equal(got, query(df, trial="t0,rerun", sort="top1"))
    assert set(load(str(root), trial=["rerun"])["trial_id"]) == {"rerun"}

    code, out, err = call_main(capsys, "query", catalog, "--trial", "t1", "--limit", "1")
    assert code == 0 and err == f"1 stitches shown, of {len(TRIALS[('deit-tsb', 't1')])} in the catalog (trial t1).\n"
    code, out, err = call_main(capsys, "query", catalog, "--trial", "t9")
    assert code == 0 and out == "" and err == f"no stitches match: the catalog {catalog} holds no rows of trial t9.\n"


def test_cli_formats_parse_back(catalog, capsys):
    args = ["query", catalog, "--sweep", "deit-tsb", "--max-flops", "5G", "--sort", "top1", "--desc"]
    expected = query(catalog, sweep="deit-tsb", max_flops="5G", sort="top1", descending=True)
    assert len(expected) > 10

    code, out, _ = call_main(capsys, *args, "--format", "json")
    assert code == 0
    records = json.loads(out)
    assert [(r["sweep"], r["trial_id"], r["stitch_id"]) for r in records] == \
        list(zip(expected.sweep, expected.trial_id, expected.stitch_id))
    first = records[0]
    row = expected.iloc[0]
    assert first["anchors"] == row["anchors"] and first["cuts"] == row["cuts"]
    assert first["flops"] == row["flops"] and first["top1"] == row["top1"]
    assert isinstance(first["stitch_id"], int) and isinstance(first["anchors"], list)
    assert any(r["top1"] is None for r in json.loads(call_main(capsys, "query", catalog, "--format", "json")[1]))

    code, out, _ = call_main(capsys, *args, "--format", "csv")
    assert code == 0
    back = pd.read_csv(StringIO(out))
    assert list(back.columns) == list(expected.columns)
    assert list(zip(back.sweep, back.trial_id, back.stitch_id)) == \
        list(zip(expected.sweep, expected.trial_id, expected.stitch_id))
    assert [json.loads(a) for a in back["anchors"]] == list(expected["anchors"])
    assert [json.loads(c) for c in back["cuts"]] == list(expected["cuts"])
    assert list(back["flops"]) == list(expected["flops"])
    pd.testing.assert_series_equal(back["top1"], expected["top1"].astype(float))

    code, out, err = call_main(capsys, *args)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["sweep", "trial_id", "stitch_id", "anchors", "cuts", "GFLOPs", "params(M)",
                                "top1", "top5", "latency(ms)", "sampling"]
    assert set(lines[1]) <= {"-", " "} and len(lines) == 2 + len(expected)
    assert "deit_tiny_patch16_224>deit_small_patch16_224" in out and "[1,2]" in out
    top1_col = lines[0].index("top1") + len("top1")  # right-aligned numbers end at the header's end
    shown = [line[top1_col - 5:top1_col].strip() for line in lines[2:]]
    assert shown == ["-" if pd.isna(t) else f"{t:.2f}" for t in expected["top1"]]
    assert "-" in shown  # the stitch whose evaluation failed
    assert f"{len(expected)} stitches shown" in err


def test_cli_pareto_and_json_end_to_end(catalog, df):
    result = run_cli("query", catalog, "--pareto", "--format", "json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert {(r["sweep"], r["trial_id"], r["stitch_id"]) for r in records} == brute_front(frame_rows(df))


def test_cli_no_match(catalog, capsys, tmp_path):
    code, out, err = call_main(capsys, "query", catalog, "--min-top1", "99.9")
    assert code == 0 and out == "" and "no stitches match" in err
    code, out, err = call_main(capsys, "query", catalog, "--sweep", "typo")
    assert code == 0 and out == "" and "no sweep 'typo'" in err and "ablation, deit-tsb" in err
    (tmp_path / "empty").mkdir()
    code, out, err = call_main(capsys, "query", str(tmp_path / "empty"))
    assert code == 0 and "no readable trial files" in err


def test_cli_runs_without_torch_timm_or_ray(catalog, df):
    """Reading a catalog needs pyarrow, not the training stack: with torch, timm, fvcore, Ray and Optuna
    unimportable, query, check and compare run (and start without torch's seconds of import)."""
    out = {}
    for args in (["query", catalog, "--pareto", "--format", "json"], ["check", catalog],
                 ["compare", catalog, "--by", "sampling", "--resamples", "200", "--format", "json"]):
        script = import_blocker("torch", "timm", "fvcore", "ray", "optuna") + (
            f"import runpy; sys.argv = ['orchestrator.catalog', *{args!r}]; "
            "runpy.run_module('orchestrator.catalog', run_name='__main__', alter_sys=True)")
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (args[0], proc.stderr)
        out[args[0]] = proc.stdout, proc.stderr
    assert {(r["sweep"], r["trial_id"], r["stitch_id"]) for r in json.loads(out["query"][0])} == \
        brute_front(frame_rows(df))
    assert "checked 5 trial files" in out["check"][1] and "no problems" in out["check"][1]
    assert json.loads(out["compare"][0]), out["compare"]


def test_cli_broken_pipe_is_quiet(tmp_path):
    root = tmp_path / "big"
    writer = CatalogWriter(root, "big")
    for i in range(12):  # ~300 rows: more output than a pipe buffer holds
        writer.write_trial(f"t{i}", make_rows(i, "uniform"))
    proc = subprocess.Popen([*CLI, "query", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first write, like `| head` having exited
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err
    assert "stitches shown" not in err  # stopped at the broken pipe


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------


def check_png(path) -> tuple[int, int]:
    from PIL import Image

    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.parametrize("color_by", ["trial", "sampling"])
def test_plot_writes_png(df, tmp_path, color_by):
    out = plot(df, tmp_path / f"front-{color_by}.png", color_by=color_by)
    width, height = check_png(out)
    assert (width, height) == (1350, 900)  # 9 x 6 in at 150 dpi


def test_plot_cli_and_errors(catalog, df, tmp_path, capsys):
    out = tmp_path / "sweep.png"
    code, _, err = call_main(capsys, "plot", catalog, "--out", str(out), "--sweep", "deit-tsb",
                             "--color-by", "sweep")
    assert code == 0 and "wrote" in err
    check_png(out)
    with pytest.raises(SNNetError, match="color_by"):
        plot(df, tmp_path / "x.png", color_by="rainbow")
    with pytest.raises(SNNetError, match="Nothing to plot"):
        plot(df.iloc[:0], tmp_path / "x.png")
    code, _, err = call_main(capsys, "plot", catalog, "--out", str(tmp_path / "y.png"), "--min-top1", "100")
    assert code == 0 and "no stitches match" in err and not (tmp_path / "y.png").exists()


def test_plot_out_names_the_file_written_and_refuses_a_folder(catalog, df, tmp_path, capsys):
    code, _, err = call_main(capsys, "plot", catalog, "--out", str(tmp_path / "front"))
    assert code == 0 and f"wrote {tmp_path / 'front.png'} (" in err  # matplotlib adds .png: say so
    check_png(tmp_path / "front.png")
    assert plot(df, tmp_path / "dot.") == str(tmp_path / "dot.png")
    assert plot(df, tmp_path / "keep.png") == str(tmp_path / "keep.png")

    folder = tmp_path / "pictures"
    folder.mkdir()
    for out in (str(folder) + os.sep, str(folder), ""):
        code, stdout, err = call_main(capsys, "plot", catalog, "--out", out)
        assert code == 2 and stdout == "" and err.count("\n") == 1, (out, err)
        assert err.startswith("error: The plot's file (--out / out) must name a file such as front.png"), err
        assert ("an empty name" if not out else "which is a folder") in err
        with pytest.raises(SNNetError, match="must name a file"):  # before the catalog is read
            plot(str(tmp_path / "no-catalog-here"), out)
        code, _, err = call_main(capsys, "plot", str(tmp_path / "no-catalog-here"), "--out", out)
        assert code == 2 and "must name a file" in err, err  # the CLI too: the file first, then the catalog
    assert list(folder.iterdir()) == [] and not os.path.exists(".png")
