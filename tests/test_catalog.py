"""The Parquet stitch catalog (design brief, section 5): layout, schema, atomic writes, readers.

No Ray: rows come from :func:`orchestrator.train.launch.catalog_rows` over a real (small) stitch space
with made-up accuracies; what is tested is how they are stored and read back.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from orchestrator.catalog import SCHEMA, SCHEMA_VERSION, CatalogWriter, read_catalog, trial_file
from orchestrator.train.config import TrainConfig
from orchestrator.train.launch import catalog_rows
from snnet import SNNetError

META_KEY = b"snnet.catalog.schema_version"


@pytest.fixture(scope="module")
def space():
    from snnet import build_supernet

    return build_supernet(["resnet18", "resnet50"], img_size=32).space


def _config(**kw) -> TrainConfig:
    base = dict(kernel_size=2, stride=1, sampling="uniform", dataset="/data/imagenet", epochs=3, workers=2, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def _rows(space, top1_base: float = 50.0, config: TrainConfig | None = None, r2=None):
    results = {str(s.stitch_id): [top1_base + s.stitch_id, min(100.0, top1_base + 20 + s.stitch_id)] for s in space}
    r2 = r2 if r2 is not None else {key: 0.5 + 0.1 * i for i, key in enumerate(space.layers)}
    return catalog_rows(config or _config(), space, results, r2, "file:///ckpt/trial")


def _files(folder) -> list[str]:
    return sorted(os.listdir(folder))


# -- catalog_rows ------------------------------------------------------------------------------


def test_catalog_rows_one_row_per_stitch(space):
    config = _config(sampling="sandwich", init="kaiming", mode="stitch-only", anchor_lr=1e-4, stitch_lr=2e-3)
    r2 = {key: 0.9 - 0.1 * i for i, key in enumerate(space.layers)}
    rows = _rows(space, config=config, r2=r2)
    assert [r["stitch_id"] for r in rows] == [s.stitch_id for s in space]
    for row, stitch in zip(rows, space):
        assert row["anchors"] == list(space.names(stitch))
        assert row["cuts"] == [list(c) for c in stitch.cuts]
        assert (row["flops"], row["params"]) == (stitch.flops, stitch.params)
        assert (row["top1"], row["top5"]) == (50.0 + stitch.stitch_id, min(100.0, 70.0 + stitch.stitch_id))
        assert row["layers"] == list(stitch.layers)
        expected_r2 = min(r2[k] for k in stitch.layers) if stitch.layers else None
        assert row["ls_r2"] == expected_r2
        assert row["latency_ms"] is None and row["device"] is None  # no latency measured: no device either
        assert (row["sampling"], row["init"], row["mode"], row["epochs"]) == ("sandwich", "kaiming", "stitch-only", 3)
        assert (row["anchor_lr"], row["stitch_lr"], row["seed"], row["workers"]) == (1e-4, 2e-3, 7, 2)
        assert (row["kernel_size"], row["stride"]) == (2, 1)
        assert (row["preset"], row["released_deit_head"]) == (space.config.preset, False) == (None, False)
        assert row["dataset"] == "/data/imagenet" and row["checkpoint"] == "file:///ckpt/trial"
    # anchors alone have no cut and no layer; every stitched row has one junction here
    assert sum(1 for r in rows if len(r["anchors"]) == 1) == 2
    assert all(len(r["cuts"]) == 1 and len(r["layers"]) == 1 for r in rows if len(r["anchors"]) == 2)


def test_catalog_rows_name_the_experiment_the_configuration_and_the_selection_split(space):
    from orchestrator.train.launch import code_version
    from search_spaces.fingerprint import config_fingerprint

    config = _config(sweep="demo", trial_id="t1")
    results = {str(s.stitch_id): [50.0, 90.0] for s in space}
    first, second = (s.stitch_id for s in list(space)[:2])
    rows = catalog_rows(config, space, results, {}, "ckpt", latency={str(first): 1.5}, device="NVIDIA H100",
                        selection={str(s.stitch_id): 40.0 for s in space}, selection_images=36)
    by_id = {r["stitch_id"]: r for r in rows}
    # train's experiment is Ray's run name <sweep>-<trial_id>, which a resumed run keeps; a sweep names its own
    assert {r["experiment"] for r in rows} == {"demo-t1"}
    named = catalog_rows(config, space, results, {}, "ckpt", experiment="demo-sweep-x")
    assert named[0]["experiment"] == "demo-sweep-x"
    assert {r["selection_images"] for r in rows} == {36}
    assert catalog_rows(config, space, results, {}, "ckpt")[0]["selection_images"] is None  # not told
    # device and batch size only beside a measured latency
    measured = [(by_id[i]["latency_ms"], by_id[i]["device"], by_id[i]["latency_batch_size"]) for i in (first, second)]
    assert measured == [(1.5, "NVIDIA H100", 1), (None, None, None)]
    # one configuration, whatever the run is called and where it writes; the seed makes another
    fingerprint = rows[0]["config_fingerprint"]
    assert {r["config_fingerprint"] for r in rows} == {fingerprint} == {config_fingerprint(config)}
    assert fingerprint.startswith("sha256:")
    moved = _config(sweep="other", trial_id="t9", catalog="s3://b/c", storage_path="/elsewhere", max_failures=0)
    assert config_fingerprint(moved) == fingerprint
    others = {config_fingerprint(_config(seed=8)), config_fingerprint(_config(batch_size=64))}
    assert len(others) == 2 and fingerprint not in others
    assert rows[0]["code_version"] == code_version()


def test_code_version_names_the_commit_in_a_checkout():
    from orchestrator.train.launch import code_version

    root = os.path.dirname(os.path.dirname(os.path.abspath(__import__("orchestrator").__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        pytest.skip("not a git checkout")
    assert re.fullmatch(r"[^+\s]+\+g[0-9a-f]{12}(\.dirty)?", code_version()), code_version()


# -- writing and reading -----------------------------------------------------------------------


def test_two_trials_read_back_the_same_with_every_reader(tmp_path, space):
    root = tmp_path / "catalog"
    before = dt.datetime.now(dt.timezone.utc)
    writer = CatalogWriter(root, "s1")
    rows1, rows2 = _rows(space, 40.0), _rows(space, 60.0)
    path1 = writer.write_trial("t1", rows1)
    path2 = writer.write_trial("t2", rows2)
    after = dt.datetime.now(dt.timezone.utc)
    n = len(rows1) + len(rows2)

    assert path1 == f"{os.path.abspath(root)}/sweep=s1/trial-t1.parquet" == trial_file(str(root), "s1", "t1")
    assert _files(root) == ["sweep=s1"]
    assert _files(root / "sweep=s1") == ["trial-t1.parquet", "trial-t2.parquet"]
    assert os.path.isfile(path2)

    # our reader: SCHEMA's columns plus the partition column, with SCHEMA's types
    table = read_catalog(root)
    assert table.num_rows == n
    assert table.schema.names == SCHEMA.names + ["sweep"]
    for field in SCHEMA:
        assert table.schema.field(field.name).type == field.type, field.name
    assert table.schema.field("stitch_id").type == pa.int32()
    assert table.schema.field("cuts").type == pa.list_(pa.list_(pa.int32()))
    assert table.schema.field("anchors").type == pa.list_(pa.string())
    assert table.schema.field("flops").type == pa.int64()
    assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("latency_ms").type == pa.float64() and table.schema.field("latency_ms").nullable
    assert table.schema.field("sweep").type == pa.string()
    assert set(table.column("sweep").to_pylist()) == {"s1"}
    assert table.column("latency_ms").null_count == n
    assert sorted(set(table.column("trial_id").to_pylist())) == ["t1", "t2"]
    created = set(table.column("created_at").to_pylist())
    assert len(created) == 2  # one timestamp per trial file
    assert all(before - dt.timedelta(seconds=1) <= c <= after + dt.timedelta(seconds=1) for c in created)

    # values round-trip exactly
    got = sorted((r for r in table.to_pylist() if r["trial_id"] == "t1"), key=lambda r: r["stitch_id"])
    for want, have in zip(rows1, got):
        for key, value in want.items():
            assert have[key] == value, key
        assert have["sweep"] == "s1"

    # pyarrow.dataset with hive partitioning as it comes
    dset = ds.dataset(str(root), format="parquet", partitioning="hive")
    assert dset.to_table().num_rows == n and "sweep" in dset.schema.names
    assert dset.schema.field("stitch_id").type == pa.int32()

    # pandas
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(str(root))
    assert len(frame) == n
    assert set(frame["sweep"].astype(str)) == {"s1"}
    assert str(frame["stitch_id"].dtype) == "int32" and str(frame["flops"].dtype) == "int64"
    assert frame["latency_ms"].isna().all()

    # DuckDB over the glob, with the partition column
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    try:
        rel = f"read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
        count, trials, sweep = con.execute(
            f"select count(*), count(distinct trial_id), min(sweep) from {rel}").fetchone()
        assert (count, trials, sweep) == (n, 2, "s1")
        types = con.execute(
            f"select typeof(stitch_id), typeof(cuts), typeof(created_at), typeof(latency_ms), typeof(sweep), "
            f"typeof(flops) from {rel} limit 1"
        ).fetchone()
        assert types == ("INTEGER", "INTEGER[][]", "TIMESTAMP WITH TIME ZONE", "DOUBLE", "VARCHAR", "BIGINT")
        assert con.execute(f"select count(*) from {rel} where latency_ms is null").fetchone()[0] == n
    finally:
        con.close()

    # the file schema carries its version
    for path in (path1, path2):
        meta = pq.read_schema(path).metadata
        assert meta[META_KEY] == SCHEMA_VERSION.encode()
        assert pq.ParquetFile(path).metadata.num_rows == len(rows1)


def test_second_sweep_adds_a_partition_and_leaves_the_first_untouched(tmp_path, space):
    root = tmp_path / "catalog"
    first = CatalogWriter(root, "s1").write_trial("t1", _rows(space, 40.0))
    data, mtime = open(first, "rb").read(), os.stat(first).st_mtime_ns
    second = CatalogWriter(root, "s2").write_trial("t1", _rows(space, 60.0))  # same trial id, other sweep
    assert second != first and _files(root) == ["sweep=s1", "sweep=s2"]
    assert open(first, "rb").read() == data and os.stat(first).st_mtime_ns == mtime

    n = len(space)
    table = read_catalog(root)
    assert table.num_rows == 2 * n
    assert sorted(table.column("sweep").to_pylist()) == ["s1"] * n + ["s2"] * n
    only = read_catalog(root, sweep="s2")
    assert only.num_rows == n and set(only.column("sweep").to_pylist()) == {"s2"}
    assert min(only.column("top1").to_pylist()) == 60.0
    assert read_catalog(str(root), sweep="nope").num_rows == 0

    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    try:
        counts = con.execute(
            f"select sweep, count(*) from read_parquet('{root}/**/*.parquet', hive_partitioning=true) "
            "group by sweep order by sweep"
        ).fetchall()
    finally:
        con.close()
    assert counts == [("s1", n), ("s2", n)]


def test_rewriting_a_trial_replaces_it_and_leaves_no_temporary_files(tmp_path, space):
    root = tmp_path / "catalog"
    writer = CatalogWriter(root, "s1")
    writer.write_trial("t1", _rows(space, 10.0))
    writer.write_trial("t1", _rows(space, 20.0)[:5])
    folder = root / "sweep=s1"
    assert _files(folder) == ["trial-t1.parquet"]
    table = read_catalog(root)
    assert table.num_rows == 5
    assert table.column("top1").to_pylist() == [20.0 + i for i in range(5)]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, space, monkeypatch):
    root = tmp_path / "catalog"
    writer = CatalogWriter(root, "s1")
    path = writer.write_trial("t1", _rows(space, 10.0))
    old = open(path, "rb").read()

    def half_then_fail(table, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        writer.write_trial("t1", _rows(space, 99.0))
    with pytest.raises(OSError, match="disk full"):
        writer.write_trial("t2", _rows(space, 99.0))
    monkeypatch.undo()
    assert _files(root / "sweep=s1") == ["trial-t1.parquet"]
    assert open(path, "rb").read() == old
    assert read_catalog(root).column("top1").to_pylist()[0] == 10.0


def test_concurrent_trials_do_not_collide(tmp_path, space):
    root = tmp_path / "catalog"
    errors = []

    def write(i):
        try:
            CatalogWriter(root, "s1").write_trial(f"t{i}", _rows(space, float(i)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _files(root / "sweep=s1") == [f"trial-t{i}.parquet" for i in range(4)]
    assert read_catalog(root).num_rows == 4 * len(space)


def test_stray_temporary_and_underscore_files_are_ignored(tmp_path, space):
    root = tmp_path / "catalog"
    CatalogWriter(root, "s1").write_trial("t1", _rows(space))
    folder = root / "sweep=s1"
    (folder / ".trial-x.tmp").write_bytes(b"PAR1 half a file")  # a writer that died mid-write
    (folder / "_tmp").write_bytes(b"junk")
    (root / "_SUCCESS").write_bytes(b"")
    n = len(space)
    assert read_catalog(root).num_rows == n

    pd = pytest.importorskip("pandas")
    assert len(pd.read_parquet(str(root))) == n
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    try:
        count = con.execute(
            f"select count(*) from read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
        ).fetchone()[0]
    finally:
        con.close()
    assert count == n


def test_file_uri_roots_work_like_local_paths(tmp_path, space):
    root = tmp_path / "catalog"
    uri = "file://" + str(root)
    path = CatalogWriter(uri, "s1").write_trial("t1", _rows(space))
    assert os.path.isfile(path) and path.startswith(str(root))
    assert read_catalog(uri).num_rows == read_catalog(root).num_rows == len(space)


def test_empty_trial_writes_an_empty_file(tmp_path):
    root = tmp_path / "catalog"
    CatalogWriter(root, "s1").write_trial("t0", [])
    table = read_catalog(root)
    assert table.num_rows == 0 and table.schema.names == SCHEMA.names + ["sweep"]


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "bad/name", "a b", "../up", ".hidden", "_private", "sweep=x", "-dash"])
def test_invalid_sweep_and_trial_names(tmp_path, name):
    with pytest.raises(SNNetError, match=r"A sweep name must start with a letter and .*got " + re.escape(repr(name))):
        CatalogWriter(tmp_path / "catalog", name)
    writer = CatalogWriter(tmp_path / "catalog", "ok_1.2-x")
    with pytest.raises(SNNetError, match="A trial name must start with a letter or digit"):
        writer.write_trial(name, [])
    with pytest.raises(SNNetError, match="trial name"):
        trial_file(str(tmp_path), "s1", name)
    assert not (tmp_path / "catalog").exists()  # nothing was created for a bad name


def test_a_catalog_path_that_is_a_file(tmp_path):
    path = tmp_path / "catalog.parquet"
    path.write_bytes(b"not a folder")
    with pytest.raises(SNNetError, match=r"The catalog must be a folder or URI, but .*catalog\.parquet' is a file\."):
        CatalogWriter(path, "s1")
    with pytest.raises(SNNetError, match=r"is not a stitch catalog: it is a file, not a folder\."):
        read_catalog(path)


def test_reading_a_missing_catalog(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SNNetError, match=r"'.*nowhere' is not a stitch catalog: it is missing"):
        read_catalog(missing)
    with pytest.raises(SNNetError, match="not a stitch catalog"):
        read_catalog(str(missing), sweep="s1")


def test_an_all_digit_sweep_name_is_refused(tmp_path):
    # DuckDB and pyarrow's hive inference would read "2024" back as an integer column.
    with pytest.raises(SNNetError, match="A sweep name must start with a letter"):
        CatalogWriter(tmp_path / "catalog", "2024")


def test_many_processes_write_trials_at_once(tmp_path):
    import multiprocessing as mp

    from _catalog_worker import write_one as _write_one  # spawned processes import it without torch

    root = str(tmp_path / "catalog")
    jobs = [(root, f"t{i:02d}", 50) for i in range(12)]
    with mp.get_context("spawn").Pool(4) as pool:
        paths = pool.map(_write_one, jobs)
    assert len(set(paths)) == 12
    table = read_catalog(root, sweep="many")
    keys = list(zip(table.column("trial_id").to_pylist(), table.column("stitch_id").to_pylist()))
    assert len(keys) == len(set(keys)) == 12 * 50
    assert not [p for p in (tmp_path / "catalog" / "sweep=many").iterdir() if not p.name.endswith(".parquet")]
