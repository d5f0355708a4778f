"""Pruning a space by its init scores (issue 30, item 4): ``training.prune_score`` / ``prune_keep`` keep the
anchors and the best-scored part of the stitched stitches, the sampling rule draws only those, only those are
evaluated, and the catalog lists the others marked ``pruned`` without top-1 (schema 10). Plain Python, no Ray;
the recipe runs in this process on a few hundred demo digits."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import MICRO_STITCHES, hand_profile, micro_config
from torch.utils.data import Subset

from orchestrator.catalog import CatalogWriter, best_under, columns_of_version, load, pareto_front, query, read_catalog
from orchestrator.catalog.objectives import objective_values, split_values
from orchestrator.data import demo_anchors as demo  # noqa: F401 - registers the demo anchors with timm
from orchestrator.data import get_datasets
from orchestrator.serve.policy import Budget, candidates
from orchestrator.serve.replica import ServeSettings
from orchestrator.sweep.report import sweep_report
from orchestrator.sweep.trial import _pruned
from orchestrator.train.__main__ import config_from_args, parse_args
from orchestrator.train.config import TrainConfig
from orchestrator.train.launch import catalog_rows, record_run, run_training
from orchestrator.train.prepare import prepare
from orchestrator.train.recipe import SupernetRecipe
from orchestrator.train.state import TrainCallback, TrainState, Worker
from orchestrator.train.summary import summarize
from search_spaces import SearchSpace
from snnet import AnchorSpec, SNNetError, StitchSpace, create_anchor, profile_anchor
from snnet.sampling import RULES, make_rule
from snnet.scores import keep_best


def _stitches(n_anchors: int, n_stitched: int) -> list[SimpleNamespace]:
    """Anchors first (ids 0..), then stitched stitches: what keep_best reads of a space."""
    return [SimpleNamespace(stitch_id=i, is_anchor=i < n_anchors) for i in range(n_anchors + n_stitched)]


# -- which stitches are kept --------------------------------------------------------------------------------
def test_keep_best_keeps_the_anchors_and_the_best_fraction_in_each_scores_direction():
    stitches = _stitches(2, 6)  # stitched ids 2..7
    planted = {0: 1.0, 1: 1.0, 2: 0.1, 3: 0.9, 4: 0.5, 5: 0.7, 6: 0.3, 7: 0.8}
    assert keep_best(stitches, planted, "cka", 0.5) == [0, 1, 3, 5, 7]  # highest CKA: 0.9, 0.8, 0.7
    assert keep_best(stitches, planted, "init_top1", 0.5) == [0, 1, 3, 5, 7]
    assert keep_best(stitches, planted, "ls_r2", 1 / 3) == [0, 1, 3, 7]
    assert keep_best(stitches, planted, "kl", 0.5) == [0, 1, 2, 4, 6]  # KL: lowest is best
    # anchors are never pruned, however they score
    assert keep_best(stitches, {**planted, 0: -5.0, 1: -5.0}, "cka", 0.2) == [0, 1, 3, 7]


def test_keep_best_rounds_up_breaks_ties_by_id_ranks_missing_scores_last_and_keep_1_keeps_all():
    stitches = _stitches(1, 5)  # stitched ids 1..5
    assert keep_best(stitches, {i: 0.5 for i in range(6)}, "cka", 0.4) == [0, 1, 2]  # ties: the lower ids
    assert keep_best(stitches, {i: 0.5 for i in range(6)}, "cka", 0.3) == [0, 1, 2]  # ceil(1.5) = 2
    assert keep_best(stitches, {1: float("nan"), 2: None, 3: 0.1, 4: 0.2}, "cka", 0.6) == [0, 1, 3, 4]
    assert keep_best(stitches, {}, "kl", 1.0) == list(range(6))
    assert keep_best(stitches, {i: float(i) for i in range(6)}, "cka", 0.01) == [0, 5]  # at least one
    assert keep_best(_stitches(2, 0), {}, "cka", 0.5) == [0, 1]
    assert keep_best(_stitches(1, 10), {}, "cka", 0.3) == [0, 1, 2, 3]  # 0.3 * 10 is 3, not 4
    with pytest.raises(ValueError, match="score must be one of ls_r2, cka, kl, init_top1, got 'acc'"):
        keep_best(stitches, {}, "acc", 0.5)
    with pytest.raises(ValueError, match=r"keep must be a fraction in \(0, 1\], got 0"):
        keep_best(stitches, {}, "cka", 0)


# -- the sampling rule over the kept stitches --------------------------------------------------------------
@pytest.mark.parametrize("name", list(RULES))
def test_every_rule_restricted_to_stitch_ids_draws_only_those(name):
    flops = [10, 20, 30, 40, 50, 60, 70, 80]
    kept = [0, 3, 4, 7]
    options = {"scores": [0.9, 0.1, 0.5, 0.7]} if name == "scored" else {}
    rule = make_rule(name, [flops[i] for i in kept], seed=1, stitch_ids=kept, **options)
    drawn = {i for step in range(300) for rank in range(4) for i in rule.draw(step, rank, 4)}
    assert drawn == set(kept)
    whole = make_rule(name, [flops[i] for i in kept], seed=1, **options)  # the same draws, as positions
    assert [rule.draw(t, 1, 4) for t in range(50)] == [[kept[i] for i in whole.draw(t, 1, 4)] for t in range(50)]


def test_stitch_ids_must_name_one_distinct_id_per_stitch():
    with pytest.raises(SNNetError, match=r"one distinct stitch id per entry of flops \(2\), got \[1, 1\]"):
        make_rule("uniform", [1, 2], stitch_ids=[1, 1])
    with pytest.raises(SNNetError, match="one distinct stitch id per entry of flops \\(2\\), got \\[1\\]"):
        make_rule("uniform", [1, 2], stitch_ids=[1])
    with pytest.raises(SNNetError, match="stitch_ids\\[0\\] must be an integer >= 0, got -1"):
        make_rule("uniform", [1, 2], stitch_ids=[-1, 2])


# -- the settings ---------------------------------------------------------------------------------------------
def test_the_settings_are_validated_with_messages_that_say_what_must_hold():
    assert (TrainConfig().prune_score, TrainConfig().prune_keep) == (None, 0.5)
    with pytest.raises(SNNetError, match="prune_score must be one of ls_r2, cka, kl, init_top1, got 'ckaa' "
                                         "\\(did you mean 'cka'\\?\\)"):
        TrainConfig(prune_score="ckaa")
    for bad in (0, 1.5, -0.1):
        with pytest.raises(SNNetError, match=f"prune_keep must be a fraction in \\(0, 1\\], got {bad}"):
            TrainConfig(prune_keep=bad)
    with pytest.raises(SNNetError, match="prune_score 'ls_r2' ranks stitches by their least-squares fit: use init "
                                         "'ls'"):
        TrainConfig(prune_score="ls_r2", init="kaiming")
    config = config_from_args(parse_args(["--set", "training.prune_score=kl", "--set", "prune_keep=0.25"]))
    assert (config.prune_score, config.prune_keep) == ("kl", 0.25)
    with pytest.raises(SNNetError, match="prune_keep must be a fraction in \\(0, 1\\], got 2"):
        config_from_args(parse_args(["--set", "training.prune_keep=2"]))


def test_a_search_space_sets_and_searches_them_under_training():
    doc = {"name": "p", "dataset": "demo", "families": [{"name": "demo_vit", "demo": True,
                                                         "anchors": ["snnet_demo_vit_tiny", "snnet_demo_vit_small"]}],
           "training": {"epochs": 1, "prune_score": "cka", "prune_keep": {"low": 0.25, "high": 1.0}}}
    space = SearchSpace.from_dict(doc)
    assert "training.prune_keep" in space.parameters() and space.fixed()["training.prune_score"] == "cka"
    config = space.trial_config({"training.prune_keep": 0.4})
    assert (config.prune_score, config.prune_keep) == ("cka", 0.4)
    bad = {**doc, "training": {"prune_score": "top1"}}
    with pytest.raises(SNNetError, match="training.prune_score.*must be one of ls_r2, cka, kl, init_top1"):
        SearchSpace.from_dict(bad)


# -- the catalog, its readers and the reports --------------------------------------------------------------
@pytest.fixture(scope="module")
def space():
    profiles = [hand_profile("snnet_demo_vit_tiny", 32, 1), hand_profile("snnet_demo_vit_small", 64, 4)]
    return StitchSpace(profiles, TrainConfig().space_config())


@pytest.fixture(scope="module")
def pruned_rows(space):
    """Every stitch scored; all but the anchors and the best-CKA stitch pruned; the trained ones at 90% top-1
    (above every stitch, so a pruned row with a top-1 would show on the front)."""
    config = TrainConfig(prune_score="cka", prune_keep=0.01)
    scores = {str(s.stitch_id): {"cka": 1.0 if s.is_anchor else 0.1 * s.stitch_id, "kl": 0.0, "init_top1": 9.0,
                                 "images": 64} for s in space}
    kept = keep_best(space, {int(k): v["cka"] for k, v in scores.items()}, "cka", 0.01)
    pruned = [s.stitch_id for s in space if s.stitch_id not in kept]
    results = {str(i): [50.0 + i, 60.0 + i] for i in kept}
    selection = {str(i): 40.0 + i for i in kept}
    rows = catalog_rows(config, space, results, {k: 0.9 for k in space.layers}, "", scores=scores,
                        selection=selection, selection_images=10, pruned=pruned)
    return rows, kept, pruned


def test_pruned_rows_are_marked_without_top1_and_keep_their_costs_and_scores(space, pruned_rows, tmp_path):
    rows, kept, pruned = pruned_rows
    assert len(kept) == 3 and len(pruned) == len(space) - 3 > 0
    path = CatalogWriter(tmp_path, "s").write_trial("t", rows)
    df = load(tmp_path).set_index("stitch_id")
    assert df.loc[pruned, "pruned"].tolist() == [True] * len(pruned) and not df.loc[kept, "pruned"].any()
    for column in ("top1", "top5", "top1_selection"):
        assert df.loc[pruned, column].isna().all() and df.loc[kept, column].notna().all()
    for column in ("flops", "params", "ls_r2", "init_cka", "init_kl", "init_top1", "score_images"):
        assert df.loc[pruned, column].notna().all()
    # an unpruned run's rows say False; a schema-9 file (no such column) reads null
    plain = catalog_rows(TrainConfig(), space, {str(s.stitch_id): [1.0, 2.0] for s in space}, {}, "")
    assert {r["pruned"] for r in plain} == {False}
    assert "pruned" in columns_of_version(10) and "pruned" not in columns_of_version(9)
    old = pq.read_table(path).drop_columns(["pruned"])
    pq.write_table(old.replace_schema_metadata({b"snnet.catalog.schema_version": b"9"}), path,
                   write_page_checksum=True)
    assert read_catalog(tmp_path).column("pruned").null_count == len(space)


def test_the_front_best_under_and_queries_skip_pruned_rows(pruned_rows):

    rows, kept, pruned = pruned_rows
    df = pd.DataFrame(rows).assign(sweep="s", trial_id="t")
    assert set(pareto_front(df)["stitch_id"]) <= set(kept)
    assert set(pareto_front(df, per_trial=True)["stitch_id"]) <= set(kept)
    best = best_under(df)
    assert best["stitch_id"] == max(kept) and best.attrs["chosen_by"] == "top1_selection"  # not a fallback
    largest_pruned = max(pruned, key=lambda i: df.loc[df["stitch_id"] == i, "flops"].item())
    budget = df.loc[df["stitch_id"] == largest_pruned, "flops"].item()
    assert best_under(df, max_flops=budget)["stitch_id"] in kept
    assert set(query(df, min_top1=0)["stitch_id"]) == set(kept)


def test_the_objectives_and_the_summaries_count_the_trained_stitches_and_say_what_was_pruned(space, pruned_rows):
    rows, kept, pruned = pruned_rows
    trained = [r for r in rows if r["stitch_id"] in kept]
    ref = max(r["flops"] for r in rows) * 2
    assert objective_values(rows, ref, epochs=1, train_images=100, stitches_per_step=1) == objective_values(
        trained, ref, epochs=1, train_images=100, stitches_per_step=1)
    assert split_values(rows, ref) == split_values(trained, ref)
    # what a sweep trial reports of it, for the sweep's report
    assert _pruned(TrainConfig(prune_score="cka", prune_keep=0.01), rows) == {
        "prune_score": "cka", "prune_keep": 0.01, "pruned_stitches": len(pruned), "stitched_stitches": len(space) - 2}
    assert _pruned(TrainConfig(), rows) == {}
    stitched = len(space) - 2
    line = f"pruned {len(pruned)} of {stitched} stitched stitches by cka (kept 0.01)"
    text = summarize(space, rows, prune=("cka", 0.01))
    top = 50.0 + max(kept)  # the one trained stitched stitch
    assert f"pruning: {line}" in text and f"top-1:    stitched {top:.1f}% .. {top:.1f}%" in text
    trial = {"trial_id": "t1", "family": "demo_vit", "hypervolume": 0.5, "config": {},
             "prune_score": "cka", "prune_keep": 0.01, "pruned_stitches": len(pruned), "stitched_stitches": stitched}
    report = sweep_report({"sweep": "s", "experiment": "e", "catalog": "c", "trials": [trial, {**trial,
                                                                                                 "trial_id": "t2"}]})
    assert f"{line} in 2/2 trials" in report
    other = {**trial, "trial_id": "t3", "prune_score": "kl"}
    report = sweep_report({"sweep": "s", "experiment": "e", "catalog": "c", "trials": [trial, other]})
    assert f"  t1: {line}" in report and "  t3: " + line.replace("by cka", "by kl") in report
    assert "pruned" not in sweep_report({"sweep": "s", "experiment": "e", "catalog": "c",
                                         "trials": [{**trial, "prune_score": None}]})


# -- in the training recipe ----------------------------------------------------------------------------------
def test_a_pruned_run_trains_and_evaluates_only_its_kept_stitches_and_a_resume_keeps_them():
    """One epoch in this process: the init scores are computed (256 at most: the whole selection split), half
    the stitched stitches are kept by CKA, the rule draws only those and the anchors, only those are evaluated,
    the final report lists the rest as pruned, and a recipe resumed from the checkpoint keeps the same set."""


    names = ["snnet_demo_vit_tiny", "snnet_demo_vit_small"]
    config = TrainConfig(anchors=[AnchorSpec(n) for n in names], epochs=1, workers=1, kernel_size=2, ls_samples=64,
                         batch_size=64, eval_batch_size=100, prune_score="cka", prune_keep=0.5,
                         selection_fraction=0.1, early_stitches=4, early_images=20, seed=2)
    space = StitchSpace([profile_anchor(create_anchor(AnchorSpec(n))) for n in names], config.space_config())
    train, val = get_datasets("demo")
    data = (Subset(train, range(300)), Subset(val, range(50)))

    class Drawn(TrainCallback):
        def __init__(self):
            self.ids = set()

        def on_step(self, recipe, step):
            self.ids.update(recipe.rule.draw(step, 0, 1))

    torch.manual_seed(0)
    states, drawn = [], Drawn()
    recipe = SupernetRecipe(config, space, Worker(report=lambda m, s: states.append((m, s))), datasets=data,
                            callbacks=[drawn])
    recipe.run()
    final, state = states[-1]
    stitched = [s.stitch_id for s in space if not s.is_anchor]
    scores = {int(k): v["cka"] for k, v in final["init_scores"].items()}
    kept = keep_best(space, scores, "cka", 0.5)
    assert recipe.kept == kept and len(kept) == 2 + -(-len(stitched) // 2)
    assert drawn.ids and drawn.ids <= set(kept)
    assert sorted(map(int, final["results"])) == kept and sorted(map(int, final["results_selection"])) == kept
    assert final["pruned"] == [i for i in stitched if i not in kept] and final["hv_selection"] is not None
    assert set(recipe.early_front()) == set(recipe.early_ids) & set(kept)  # the early front: kept ones only

    again = SupernetRecipe(config, space, datasets=data)
    again.setup(load_weights=False)
    again.load(TrainState.from_dict(state.to_dict()))
    assert again.kept == kept and again.rule.stitch_ids == tuple(kept) and again.pruned_ids() == final["pruned"]
    rows = catalog_rows(config, space, final["results"], final["r2"], "", scores=final["init_scores"],
                        pruned=final["pruned"])
    assert [r["stitch_id"] for r in rows if r["pruned"]] == final["pruned"]
    assert all(r["top1"] is None and r["init_cka"] is not None for r in rows if r["pruned"])


def test_served_stitches_rank_on_the_selection_split_when_every_trained_one_has_it(pruned_rows):

    rows, kept, pruned = pruned_rows
    infos = ServeSettings("ckpt", tuple(rows)).infos()  # --stitches all: the pruned ones too
    assert all(s.top1_selection is not None for s in infos if s.stitch_id in kept)
    ranked = [s.stitch_id for s in candidates(infos, Budget())]
    assert ranked[: len(kept)] == sorted(kept, key=lambda i: -(40.0 + i))  # pruned (unknown accuracy) last


@pytest.mark.integration
def test_a_pruned_micro_demo_run_on_two_workers_lists_every_stitch_and_trains_the_kept_half(ray_connected,
                                                                                            tmp_path):
    """Two gloo workers keep the same stitches (else their evaluation rounds would not meet): half the
    16 stitched stitches by CKA, recomputable from the catalog's own init scores. They sample the kept ones
    by ``scored`` with ``update: loss``: the checkpoint's loss counts are both ranks' steps (all-reduced), and
    the catalog holds the settings (schema 11)."""

    options = {"score": "init_top1", "focus": "front", "temperature": 0.1, "update": "loss"}
    config = micro_config(tmp_path, prune_score="cka", prune_keep=0.5, early_stitches=0, trial_id="pruned",
                          sampling="scored", sampling_options=options)
    prepared = prepare(config, progress=lambda m: None)
    result = run_training(prepared.config, prepared=prepared, progress=lambda m: None)
    record_run(result)
    df = load(config.catalog).set_index("stitch_id")
    assert len(df) == MICRO_STITCHES and df["pruned"].notna().all()
    kept = keep_best(prepared.space, df["init_cka"].to_dict(), "cka", 0.5)
    assert sorted(df.index[~df["pruned"]]) == kept and len(kept) == 2 + (MICRO_STITCHES - 2) // 2
    assert df.loc[kept, "top1"].notna().all() and df.loc[df["pruned"], "top1"].isna().all()
    assert df.loc[df["pruned"], ["flops", "params", "ls_r2", "init_cka"]].notna().all().all()
    assert set(df["sampling_options"]) == {json.dumps({"focus": "front", "update": "loss"})}  # a front's defaults out
    assert set(df["prune_score"]) == {"cka"} and set(df["prune_keep"]) == {0.5}
    state = TrainState.read(result.checkpoint)
    counts = state.stitch_losses["running"][1]  # one epoch: no older epoch to halve
    assert state.step > 0 and sum(counts) == 2 * state.step and state.stitch_losses["ids"] == kept
