"""Damaged catalogs (issue 11): page checksums, files readers must name, ``check`` and ``--quarantine``.

Each damage is made the way an operator meets it: a bit flipped inside a data page, a trial
file rewritten without a column, a trial file copied beside itself, a file from a newer
version of the project, a half-copied file. Readers must name each file once and read the
rest; ``check`` lists them; ``--quarantine`` moves them aside (never deleting) so that DuckDB
and pandas read the catalog again. No Ray.
"""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from orchestrator.catalog import (
    SCHEMA_VERSION,
    CatalogWarning,
    CatalogWriter,
    check,
    load,
    quarantine,
    read_catalog,
    trial_file,
    trial_metadata,
    validate_name,
)
from orchestrator.catalog.__main__ import main
from snnet import SNNetError

VERSION_KEY = b"snnet.catalog.schema_version"


def rows(n: int = 12, base: float = 60.0) -> list[dict]:
    return [{"stitch_id": i, "anchors": ["a", "b"] if i else ["a"], "cuts": [[i, i + 1]] if i else [],
             "flops": 1000 + 10 * i, "params": 5 + i, "top1": base + i + 0.72, "sampling": "uniform"}
            for i in range(n)]


@pytest.fixture
def catalog(tmp_path):
    root = tmp_path / "catalog"
    for sweep, trials in {"demo": ["t0", "t1", "t2", "t3"], "other": ["t0"]}.items():
        writer = CatalogWriter(root, sweep)
        for k, trial in enumerate(trials):
            writer.write_trial(trial, rows(base=50.0 + k))
    return root


def flip_bit_in_top1(path) -> tuple[int, float, float]:
    """Flip one bit inside the top1 column's data page: (row, true top-1, what a non-verifying read gives)."""
    meta = pq.ParquetFile(path).metadata
    names = [meta.row_group(0).column(i).path_in_schema for i in range(meta.num_columns)]
    chunk = meta.row_group(0).column(names.index("top1"))
    data = bytearray(open(path, "rb").read())
    # the last bytes of the chunk are the page's values (PLAIN doubles or dictionary entries)
    end = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size
    original = pq.read_table(path).column("top1").to_pylist()
    for offset in range(end - 3, end - 40, -1):  # a bit of a double's exponent/mantissa that changes a value
        flipped = bytearray(data)
        flipped[offset] ^= 0x10
        open(path, "wb").write(flipped)
        try:
            changed = pq.read_table(path).column("top1").to_pylist()
        except (pa.ArrowException, OSError):
            continue
        if changed != original:
            return next((i, a, b) for i, (a, b) in enumerate(zip(original, changed)) if a != b)
    raise AssertionError("no bit of the top1 page changed a value")


def duckdb_count(root) -> int:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET threads TO 1")
        return con.execute(f"select count(*) from read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
                           ).fetchone()[0]
    finally:
        con.close()


# -- page checksums ------------------------------------------------------------------------------


def test_a_flipped_bit_in_a_data_page_is_detected_not_read(catalog):
    path = catalog / "sweep=demo" / "trial-t1.parquet"
    row, true, silently_wrong = flip_bit_in_top1(path)
    assert true == rows(base=51.0)[row]["top1"] != silently_wrong  # without checksums: a wrong top-1, no error
    with pytest.raises(OSError, match="CRC checksum verification failed"):
        pq.read_table(path, page_checksum_verification=True)  # the writer stored page checksums
    with pytest.raises(OSError, match="CRC"):
        read_catalog(catalog)  # the strict reader refuses
    with pytest.warns(CatalogWarning, match=r"skipping .*trial-t1\.parquet: its data cannot be read .*CRC"):
        df = load(catalog)
    assert len(df) == 4 * 12 and "t1" not in set(df.loc[df["sweep"] == "demo", "trial_id"])


# -- the files readers must name ------------------------------------------------------------------


def test_a_file_without_top1_is_named_and_left_out(catalog):
    path = catalog / "sweep=demo" / "trial-t2.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["top1"]), path)  # keeps the schema metadata (version 3)
    with pytest.warns(CatalogWarning) as record:
        df = load(catalog)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1
    assert "trial-t2.parquet" in messages[0]
    assert f"lacks the column(s) top1, which files of catalog schema version {SCHEMA_VERSION} hold" in messages[0]
    assert len(df) == 4 * 12 and df["top1"].notna().all()


def test_an_old_file_without_a_newer_column_is_read_silently(catalog, recwarn):
    path = catalog / "sweep=demo" / "trial-t2.parquet"
    table = pq.read_table(path)
    old = table.drop_columns(["top1_selection", "space_fingerprint", "latency_batch_size"])
    pq.write_table(old.replace_schema_metadata({VERSION_KEY: b"1"}), path)
    df = load(catalog)
    assert not [w for w in recwarn if issubclass(w.category, CatalogWarning)]
    assert len(df) == 5 * 12


def test_a_copied_trial_file_is_named_once_and_its_rows_not_repeated(catalog, capsys):
    folder = catalog / "sweep=demo"
    shutil.copy(folder / "trial-t0.parquet", folder / "trial-t0 (copy).parquet")
    shutil.copy(folder / "trial-t0.parquet", folder / "trial-t0-2.parquet")
    with pytest.warns(CatalogWarning) as record:
        df = load(catalog)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert "trial-t0 (copy).parquet: it repeats 12 row(s) of trial 't0' (sweep 'demo') already in" in messages[0]
    assert "trial-t0-2.parquet" in messages[1] and messages[1].endswith(
        f"{folder / 'trial-t0.parquet'} (a copied trial file?)")
    keys = list(zip(df["sweep"], df["trial_id"], df["stitch_id"]))
    assert len(keys) == len(set(keys)) == 5 * 12
    # the CLI shows the same warnings once each, and the Pareto list is not tripled
    assert main(["query", str(catalog), "--sweep", "demo", "--pareto", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert err.count("warning:") == 2
    front = json.loads(out)
    assert len({(r["trial_id"], r["stitch_id"]) for r in front}) == len(front)


def test_a_file_repeating_a_stitch_within_itself_is_named(catalog):
    path = catalog / "sweep=other" / "trial-t0.parquet"
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table, table.slice(3, 2)]), path)
    with pytest.warns(CatalogWarning, match=r"trial-t0\.parquet: it holds stitch_id 3, 4 of its trial more than once"):
        df = load(catalog)
    assert set(df["sweep"]) == {"demo"}


def test_a_file_from_a_newer_schema_is_read_with_one_note(catalog):
    path = catalog / "sweep=demo" / "trial-t3.parquet"
    table = pq.read_table(path)
    newer = table.append_column("energy_j", pa.array([1.5] * table.num_rows))
    pq.write_table(newer.replace_schema_metadata({VERSION_KEY: b"99"}), path)
    with pytest.warns(CatalogWarning) as record:
        df = load(catalog)
    assert len(record) == 1
    assert ("trial-t3.parquet: written with catalog schema version 99, newer than this reader's"
            in str(record[0].message))
    assert len(df) == 5 * 12 and "energy_j" not in df.columns
    result = check(catalog)
    assert result.problems == [] and [n.kind for n in result.notes] == ["newer-schema"]


def test_a_trial_file_outside_a_sweep_folder_is_a_problem_file(catalog, capsys):
    """A copy at the catalog's top has no sweep, so it never clashed as a duplicate: it was read as
    one more trial (rows counted twice, another seed for compare) and check said "no problems"."""
    import duckdb

    (catalog / "backup").mkdir()
    shutil.copy(catalog / "sweep=demo" / "trial-t0.parquet", catalog / "trial-t0.parquet")
    shutil.copy(catalog / "sweep=demo" / "trial-t1.parquet", catalog / "backup" / "trial-t1.parquet")
    with pytest.warns(CatalogWarning) as record:
        df = load(catalog)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert f"skipping {catalog / 'backup' / 'trial-t1.parquet'}: not under a sweep=<name> folder" in messages[0]
    assert f"skipping {catalog / 'trial-t0.parquet'}: not under a sweep=<name> folder" in messages[1]
    assert all("(the catalog's layout is sweep=<name>/trial-<id>.parquet)" in m for m in messages)
    assert len(df) == 5 * 12 and set(df["sweep"]) == {"demo", "other"}
    with pytest.raises(duckdb.Error):  # a Hive partition mismatch
        duckdb_count(catalog)

    assert [(os.path.basename(p.path), p.kind) for p in check(catalog).problems] == \
        [("trial-t1.parquet", "layout"), ("trial-t0.parquet", "layout")]
    assert main(["check", str(catalog), "--quarantine"]) == 1
    out, err = capsys.readouterr()
    assert out.count("problem: ") == 2 and out.count("moved: ") == 2 and "moved 2 problem file(s)" in err
    assert (catalog / "_quarantine" / "trial-t0.parquet.quarantined").exists()
    assert (catalog / "_quarantine" / "backup" / "trial-t1.parquet.quarantined").exists()
    assert duckdb_count(catalog) == 5 * 12
    assert main(["check", str(catalog)]) == 0  # the quarantine stays skipped


def test_check_of_a_sweep_the_catalog_lacks_says_so(catalog, capsys):
    assert main(["check", str(catalog), "--sweep", "dmeo"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"error: The catalog {catalog} has no sweep 'dmeo' (did you mean 'demo'?)")
    assert "(sweeps present: demo, other)" in captured.err
    assert main(["check", str(catalog), "--sweep", "other"]) == 0
    assert "checked 1 trial file in" in capsys.readouterr().err


def test_the_writer_refuses_repeated_stitch_ids(tmp_path):
    with pytest.raises(ValueError, match=r"repeat stitch_id \[3\]"):
        CatalogWriter(tmp_path / "c", "s").write_trial("t", rows() + [rows()[3]])


# -- check and --quarantine ------------------------------------------------------------------------


def damage(root) -> dict[str, str]:
    """Five kinds of damage; returns {file name: expected words of its reason}."""
    folder = root / "sweep=demo"
    flip_bit_in_top1(folder / "trial-t1.parquet")
    table = pq.read_table(folder / "trial-t2.parquet")
    pq.write_table(table.drop_columns(["top1"]), folder / "trial-t2.parquet")
    shutil.copy(folder / "trial-t0.parquet", folder / "trial-t0-copy.parquet")
    whole = (folder / "trial-t3.parquet").read_bytes()
    (root / "sweep=other" / "trial-half.parquet").write_bytes(whole[: len(whole) // 2])
    (folder / "trial-junk.parquet").write_bytes(b"not parquet at all" * 20)
    return {"trial-t1.parquet": "CRC checksum verification failed", "trial-t2.parquet": "lacks the column(s) top1",
            "trial-t0-copy.parquet": "repeats 12 row(s) of trial 't0'",
            "trial-half.parquet": "not a readable Parquet file", "trial-junk.parquet": "not a readable Parquet file"}


def test_check_lists_every_problem_and_quarantine_lets_duckdb_and_pandas_read_again(catalog, capsys):
    import duckdb
    import pandas as pd

    expected = damage(catalog)
    with pytest.warns(CatalogWarning):
        before = load(catalog)
    with pytest.raises(duckdb.Error):
        duckdb_count(catalog)
    with pytest.raises((pa.ArrowException, OSError)):
        pd.read_parquet(catalog)

    assert main(["check", str(catalog)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == len(expected) and all(line.startswith("problem: ") for line in lines)
    for name, words in expected.items():
        (line,) = [line for line in lines if f"/{name}: " in line]
        assert words in line
    assert "5 problem file(s)" in err and "--quarantine" in err
    assert sorted(os.listdir(catalog)) == ["sweep=demo", "sweep=other"]  # a plain check moves nothing

    sizes = {name: next(catalog.rglob(name)).stat().st_size for name in expected}
    assert main(["check", str(catalog), "--quarantine"]) == 1
    out, err = capsys.readouterr()
    assert out.count("moved: ") == len(expected) and "nothing was deleted" in err
    for name in expected:  # moved, byte for byte, with the reason beside it
        (moved,) = list((catalog / "_quarantine").rglob(name + ".quarantined"))
        assert moved.stat().st_size == sizes[name]
        note = moved.with_name(moved.name + ".txt").read_text()
        assert f"from: {catalog}" in note and expected[name] in note
    assert (catalog / "_quarantine" / "sweep=demo" / "trial-t1.parquet.quarantined").exists()

    assert duckdb_count(catalog) == len(before) == 3 * 12  # t0 and t3 of demo, t0 of other
    assert len(pd.read_parquet(catalog)) == len(before)
    assert len(ds.dataset(catalog, partitioning="hive").to_table()) == len(before)
    after = load(catalog)  # no warning now: the readers agree with what was read before
    pd.testing.assert_frame_equal(after.reset_index(drop=True), before.reset_index(drop=True))
    assert main(["check", str(catalog)]) == 0
    assert "no problems" in capsys.readouterr().err


def test_quarantine_never_overwrites_an_earlier_quarantined_file(catalog):
    folder = catalog / "sweep=demo"
    for _ in range(2):
        (folder / "trial-junk.parquet").write_bytes(b"junk" * 10)
        result = check(catalog)
        assert [os.path.basename(p.path) for p in result.problems] == ["trial-junk.parquet"]
        quarantine(result)
    names = sorted(p.name for p in (catalog / "_quarantine" / "sweep=demo").iterdir())
    assert names == ["trial-junk.parquet.quarantined", "trial-junk.parquet.quarantined-2",
                     "trial-junk.parquet.quarantined-2.txt", "trial-junk.parquet.quarantined.txt"]


def test_check_and_quarantine_on_a_pyarrow_uri(catalog, capsys):
    expected = damage(catalog)
    uri = catalog.as_uri()  # file:///...: resolved by pyarrow's filesystems like s3:// or gs://
    assert main(["check", uri, "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 8 and len(report["problems"]) == len(expected)
    assert all(p["path"].startswith(uri + "/") and p["moved_to"] is None for p in report["problems"])
    assert main(["check", uri, "--quarantine", "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert all(p["moved_to"].startswith(uri + "/_quarantine/") for p in report["problems"])
    assert main(["check", uri]) == 0
    assert duckdb_count(catalog) == 3 * 12


def test_check_on_a_clean_catalog_and_on_user_mistakes(catalog, tmp_path, capsys):
    assert main(["check", str(catalog)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "checked 5 trial files" in captured.err and "no problems" in captured.err
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["check", str(catalog), "--sweep", "../x"]) == 2
    assert "A sweep name must start with a letter" in capsys.readouterr().err


# -- names and trial metadata ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["1demo", "2024", "0x10", "1-1-1", "inf", "Infinity", "EPOCH", "a..b", "a/b",
                                  "..", ".", "_x", ".x", "a b", "sweep=x", "x" * 101, "", None, "a\\b"])
def test_invalid_sweep_names(name):
    with pytest.raises(SNNetError, match="sweep name must"):
        validate_name("sweep", name)


@pytest.mark.parametrize("name", ["1a2b3_00001", "t0", "trial.1", "A-b_c"])
def test_trial_ids_may_start_with_a_digit(name):
    assert validate_name("trial", name) == name and validate_name("experiment", name) == name
    with pytest.raises(SNNetError, match="trial name must start with a letter or digit"):
        validate_name("trial", "../" + name)


def test_every_valid_sweep_name_reads_back_as_a_string_in_duckdb_and_pyarrow(tmp_path):
    import duckdb

    names = ["demo", "d2024", "x1", "a.b", "x-1", "T", "nan", "true", "null", "e5", "Jan-2024", "today", "a" * 100]
    for name in names:
        assert validate_name("sweep", name) == name
    root = tmp_path / "names"
    for name in names:
        CatalogWriter(root, name).write_trial("t0", rows(2))
    con = duckdb.connect()
    try:
        got = con.execute(f"select distinct sweep, typeof(sweep) from read_parquet('{root}/**/*.parquet', "
                          "hive_partitioning=true)").fetchall()
    finally:
        con.close()
    assert sorted(got) == sorted((n, "VARCHAR") for n in names)
    inferred = ds.dataset(root, partitioning="hive").to_table().column("sweep")
    assert inferred.type == pa.string() and set(inferred.to_pylist()) == set(names)


def test_trial_metadata_reads_what_the_writer_stored(tmp_path):
    root = tmp_path / "c"
    assert trial_metadata(root, "s", "t0") is None
    CatalogWriter(root, "s").write_trial("t0", rows(3), metadata={"snnet.space_fingerprint": "abc123",
                                                                  "snnet.catalog.schema_version": "0"})
    meta = trial_metadata(root, "s", "t0")
    assert meta["snnet.space_fingerprint"] == "abc123"
    assert meta["snnet.catalog.schema_version"] == SCHEMA_VERSION  # cannot be overridden
    open(trial_file(str(root), "s", "t1"), "wb").write(b"half a file")
    assert trial_metadata(root, "s", "t1") is None
