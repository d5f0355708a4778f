"""The anchors' top-1 before and after joint training (issue 28, item 6): the catalog columns
``top1_before``, ``top1_selection_before`` and ``eval_images``, and the summary's before -> after
lines with a DROP flag beyond two binomial standard errors. Plain Python, no Ray, no training."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
from conftest import hand_profile

from orchestrator.catalog import CatalogWriter, read_catalog
from orchestrator.train.config import TrainConfig
from orchestrator.train.launch import catalog_rows
from orchestrator.train.summary import anchor_changes, anchor_noise, summarize
from snnet import StitchSpace


@pytest.fixture(scope="module")
def space():
    profiles = [hand_profile("snnet_demo_vit_tiny", 32, 1), hand_profile("snnet_demo_vit_small", 64, 4)]
    return StitchSpace(profiles, TrainConfig().space_config())


def _rows(space, before, *, top1_small=50.0, top1_large=80.0, selection=True):
    """Rows with the small anchor at ``top1_small``, the large at ``top1_large`` after training,
    stitched rows at 60%; ``before`` maps anchor name -> [top-1 before on evaluation, on selection]."""
    ids = {space.names(s)[0]: s.stitch_id for s in space if s.is_anchor}
    after = {ids["snnet_demo_vit_tiny"]: top1_small, ids["snnet_demo_vit_small"]: top1_large}
    results = {str(s.stitch_id): [after.get(s.stitch_id, 60.0), 99.0] for s in space}
    chosen = {str(s.stitch_id): after.get(s.stitch_id, 60.0) for s in space} if selection else None
    prior = {str(ids[name]): pair for name, pair in before.items()}
    return catalog_rows(TrainConfig(), space, results, {}, "", selection=chosen,
                        selection_images=400 if selection else 0, before=prior, eval_images=1000)


def test_the_noise_band_is_two_binomial_standard_errors():
    assert anchor_noise(85.0, 1080) == pytest.approx(200.0 * math.sqrt(0.85 * 0.15 / 1080))  # 2.17 points
    assert anchor_noise(50.0, 100) == pytest.approx(10.0)
    assert anchor_noise(100.0, 30) == pytest.approx(200.0 * math.sqrt((1 / 30) * (29 / 30) / 30))  # never 0


def test_anchor_rows_carry_their_top1_before_and_old_files_read_nulls(space, tmp_path):
    rows = _rows(space, {"snnet_demo_vit_tiny": [52.0, 51.0], "snnet_demo_vit_small": [85.0, 84.0]})
    path = CatalogWriter(tmp_path, "s").write_trial("t", rows)
    df = read_catalog(tmp_path).to_pandas().sort_values("flops")
    anchors = df[df["anchors"].map(len) == 1]
    assert list(anchors["top1_before"]) == [52.0, 85.0] and list(anchors["top1_selection_before"]) == [51.0, 84.0]
    assert df.loc[df["anchors"].map(len) > 1, "top1_before"].isna().all()  # stitched rows: none
    assert (df["eval_images"] == 1000).all()
    old = pq.read_table(path).drop_columns(["top1_before", "top1_selection_before", "eval_images"])
    pq.write_table(old.replace_schema_metadata({b"snnet.catalog.schema_version": b"8"}), path,
                   write_page_checksum=True)
    df = read_catalog(tmp_path).to_pandas()
    assert df["top1_before"].isna().all() and df["eval_images"].isna().all() and len(df) == len(space)
    assert anchor_changes(df.to_dict("records")) == []  # nothing measured before: nothing said


def test_the_summary_shows_before_and_after_and_flags_a_drop_beyond_noise(space):
    # the large anchor falls 5 points (noise on 1000 images at 85%: 2.26; on 400 selection images: 3.57),
    # the small one 1 point (noise 3.16 and 4.99): only the large one is a DROP, on both splits
    rows = _rows(space, {"snnet_demo_vit_tiny": [51.0, 51.0], "snnet_demo_vit_small": [85.0, 85.0]})
    changes = {(c["anchor"], c["split"]): c for c in anchor_changes(rows)}
    assert {k: c["dropped"] for k, c in changes.items()} == {
        ("snnet_demo_vit_tiny", "evaluation"): False, ("snnet_demo_vit_tiny", "selection"): False,
        ("snnet_demo_vit_small", "evaluation"): True, ("snnet_demo_vit_small", "selection"): True}
    assert changes[("snnet_demo_vit_small", "selection")]["images"] == 400
    text = summarize(space, rows)
    lines = text.splitlines()
    anchors = next(i for i, ln in enumerate(lines) if ln.startswith("anchors:  "))
    assert "snnet_demo_vit_tiny (" in lines[anchors] and "top-1 51.0% -> 50.0%)  <  " in lines[anchors]
    assert lines[anchors].endswith("top-1 85.0% -> 80.0%)")
    assert lines[anchors + 1] == (
        "          before -> after joint training, evaluation split (1000 images); selection split (400 images): "
        "51.0% -> 50.0%, 85.0% -> 80.0%; DROP beyond 2 binomial standard errors: "
        "snnet_demo_vit_small evaluation -5.0 (noise +-2.3), snnet_demo_vit_small selection -5.0 (noise +-3.6)")
    kept = summarize(space, _rows(space, {"snnet_demo_vit_small": [81.0, 81.0]}, selection=False))
    # a fall within noise is no DROP; without a selection split there is no line for it
    assert kept.splitlines()[kept.splitlines().index(next(ln for ln in kept.splitlines()
                                                        if ln.startswith("anchors:  "))) + 1] == (
        "          before -> after joint training, evaluation split (1000 images); "
        "no anchor fell beyond 2 binomial standard errors")
    assert "before -> after" not in summarize(space, _rows(space, {}))  # epochs 0: nothing before


def test_the_sweep_report_counts_trials_whose_anchors_dropped(space):
    from orchestrator.sweep.report import sweep_report

    kept = anchor_changes(_rows(space, {"snnet_demo_vit_small": [81.0, 80.0]}))
    lost = anchor_changes(_rows(space, {"snnet_demo_vit_small": [86.0, 85.0]}))
    trials = [{"trial_id": t, "family": "demo_vit", "hypervolume": hv, "config": {}, "anchors_kept": changes}
              for t, hv, changes in (("a", 0.5, kept), ("b", 0.4, lost), ("c", 0.3, None))]
    text = sweep_report({"sweep": "s", "experiment": "e", "catalog": "c", "trials": trials})
    assert "anchors kept their top-1 through joint training (within 2 binomial standard errors) in 1/2 trials:" in text
    assert ("  b: snnet_demo_vit_small 86.0% -> 80.0% (evaluation) DROP; "
            "snnet_demo_vit_small 85.0% -> 80.0% (selection) DROP") in text
    assert "  a: " not in text
