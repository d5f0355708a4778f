"""Catalog schema 6 (issue 12): the fidelity knobs ``data_fraction`` and ``image_size`` per row.

A sweep may search cheaply (a fraction of the training set, a smaller input) and re-run its best
points at full fidelity; the catalog must tell the two apart, older catalogs must still read, and
``catalog compare --by data_fraction`` / ``--by image_size`` must group by them. No Ray.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_catalog_compare import trial_rows

from orchestrator.catalog import (
    SCHEMA,
    SCHEMA_VERSION,
    CatalogWarning,
    CatalogWriter,
    check,
    columns_of_version,
    load,
    read_catalog,
)
from orchestrator.catalog.__main__ import main
from orchestrator.train.config import TrainConfig
from orchestrator.train.launch import catalog_rows

VERSION_KEY = b"snnet.catalog.schema_version"
FIDELITY = ["data_fraction", "image_size"]


@pytest.fixture(scope="module")
def space():
    from snnet import build_supernet

    return build_supernet(["resnet18", "resnet50"], img_size=32).space


def _rows(space, **config) -> list[dict]:
    config = TrainConfig(dataset="/data/imagenet", epochs=3, **config)
    results = {str(s.stitch_id): [50.0 + s.stitch_id, 70.0] for s in space}
    return catalog_rows(config, space, results, {}, "file:///ckpt/trial")


# -- the schema and its versions ---------------------------------------------------------------


def test_schema_6_adds_the_fidelity_columns_with_their_types():
    assert int(SCHEMA_VERSION) >= 6  # 7 added experiment, config_fingerprint and selection_images
    assert str(SCHEMA.field("data_fraction").type) == "double" and SCHEMA.field("data_fraction").nullable
    assert str(SCHEMA.field("image_size").type) == "int32" and SCHEMA.field("image_size").nullable
    assert not set(FIDELITY) & set(columns_of_version(5))
    assert set(FIDELITY) <= set(columns_of_version(6))
    # every earlier version holds what it held before: 6 only adds
    assert set(columns_of_version(6)) - set(columns_of_version(5)) == set(FIDELITY)
    assert {"preset", "released_deit_head"} <= set(columns_of_version(5)) - set(columns_of_version(4))


# -- rows ---------------------------------------------------------------------------------------


def test_rows_record_the_fidelity_each_trial_trained_at(space, tmp_path):
    cheap = _rows(space, data_fraction=0.25, image_size=128)
    full = _rows(space)
    assert {(r["data_fraction"], r["image_size"]) for r in cheap} == {(0.25, 128)}
    assert {(r["data_fraction"], r["image_size"]) for r in full} == {(1.0, None)}  # None: the family's default
    writer = CatalogWriter(tmp_path / "catalog", "fid")
    path = writer.write_trial("cheap", cheap)
    writer.write_trial("full", full)
    assert pq.read_schema(path).metadata[VERSION_KEY] == SCHEMA_VERSION.encode()
    df = load(tmp_path / "catalog")
    by_trial = df.groupby("trial_id")[FIDELITY].agg(lambda s: set(s.astype(object).where(s.notna(), None)))
    assert by_trial.loc["cheap"].tolist() == [{0.25}, {128}]
    assert by_trial.loc["full"].tolist() == [{1.0}, {None}]
    assert str(df["image_size"].dtype) == "Int32"  # a nullable int, not floats with NaN


# -- older catalogs -----------------------------------------------------------------------------


def test_a_version_5_file_without_the_fidelity_columns_reads_silently_as_null(space, tmp_path, recwarn):
    root = tmp_path / "catalog"
    writer = CatalogWriter(root, "fid")
    writer.write_trial("new", _rows(space, data_fraction=0.5))
    old_path = writer.write_trial("old", _rows(space))
    old = pq.read_table(old_path).drop_columns(FIDELITY)
    pq.write_table(old.replace_schema_metadata({VERSION_KEY: b"5"}), old_path, write_page_checksum=True)

    df = load(root)
    assert not [w for w in recwarn if issubclass(w.category, CatalogWarning)]
    assert len(df) == 2 * len(space)
    old_rows = df[df["trial_id"] == "old"]
    assert old_rows["data_fraction"].isna().all() and old_rows["image_size"].isna().all()
    assert (df.loc[df["trial_id"] == "new", "data_fraction"] == 0.5).all()
    assert read_catalog(root).num_rows == 2 * len(space)  # the strict reader too
    assert not check(root).problems


def test_a_version_6_file_lacking_a_fidelity_column_is_named(space, tmp_path):
    root = tmp_path / "catalog"
    writer = CatalogWriter(root, "fid")
    writer.write_trial("good", _rows(space))
    path = writer.write_trial("cut", _rows(space))
    pq.write_table(pq.read_table(path).drop_columns(["image_size"]), path)  # keeps its version (6 or later)
    with pytest.warns(CatalogWarning) as record:
        df = load(root)
    (message,) = [str(w.message) for w in record]
    assert "trial-cut.parquet" in message
    assert f"lacks the column(s) image_size, which files of catalog schema version {SCHEMA_VERSION} hold" in message
    assert set(df["trial_id"]) == {"good"}


# -- compare by a fidelity knob -----------------------------------------------------------------


@pytest.fixture
def fidelity_catalog(tmp_path):
    """Two seeds at a quarter of the data and 128 px, two at all of it and the family's resolution
    (the full ones 2 points better); everything else shared."""
    rng = np.random.default_rng(0)
    root = tmp_path / "catalog"
    writer = CatalogWriter(root, "two_stage")
    for label, fraction, size, offset in (("cheap", 0.25, 128, 0.0), ("full", 1.0, None, 2.0)):
        for seed in range(2):
            rows = trial_rows(fraction, seed, offset=offset, rng=rng, by="data_fraction", image_size=size)
            writer.write_trial(f"{label}-{seed}", rows)
    return root


@pytest.mark.parametrize("by, a, b", [("data_fraction", 0.25, 1.0), ("image_size", 128, "default")])
def test_compare_by_a_fidelity_knob(fidelity_catalog, capsys, by, a, b):
    ignore = ["--ignore", "image_size" if by == "data_fraction" else "data_fraction"]
    assert main(["compare", str(fidelity_catalog), "--by", by, *ignore, "--format", "json",
                 "--resamples", "300"]) == 0
    report = json.loads(capsys.readouterr().out)
    (pair,) = report["pairs"]
    assert (pair["a"], pair["b"], pair["trials_a"], pair["trials_b"]) == (a, b, 2, 2)
    assert pair["top1_diff"] == pytest.approx(2.0, abs=0.5) and pair["top1_low"] > 0  # the planted 2 points


def test_compare_keeps_fidelities_apart_unless_asked(fidelity_catalog, capsys):
    # by seed-free settings other than the knobs, the cheap and full trials are not one space
    assert main(["compare", str(fidelity_catalog), "--by", "data_fraction", "--resamples", "300"]) == 2
    err = capsys.readouterr().err
    assert "they also differ in image_size (128, None)" in err and "--ignore image_size" in err
