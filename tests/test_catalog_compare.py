"""``catalog compare`` (issue 12): paired top-1 and hypervolume differences with bootstrap intervals.

Catalog rows are synthetic: two anchors and the stitches between them, top-1 interpolating
with seeded Gaussian noise. A planted difference must be detected (interval excludes 0), equal
groups must give an interval that covers 0, and the intervals must cover the truth about as
often as they claim. No Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from orchestrator.catalog import CatalogWriter, load
from orchestrator.catalog.__main__ import main
from orchestrator.catalog._compare import bootstrap_interval, compare, format_comparison
from orchestrator.catalog.objectives import hypervolume
from snnet import SNNetError


def trial_rows(group: str, seed: int, *, offset: float = 0.0, noise: float = 0.5, kernel_size: int = 2,
               rng: np.random.Generator, by: str = "sampling", **settings) -> list[dict]:
    """Anchors a (1 GFLOPs, 70%) and b (4 GFLOPs, 80%) and the stitches of a window of ``kernel_size``."""
    common = dict(kernel_size=kernel_size, stride=1, sampling="uniform", epochs=3, init="ls", seed=seed,
                  dataset="synthetic")
    common.update(settings, **{by: group})
    out = [dict(common, anchors=["a"], cuts=[], flops=1_000_000_000, top1=70.0),
           dict(common, anchors=["b"], cuts=[], flops=4_000_000_000, top1=80.0)]
    for j in range(1, 12):
        for k in range(j + 1, j + kernel_size):  # k = j + 1 is the plain cut; larger windows add repeats
            w = j / 12 + (k - j - 1) * 0.01
            out.append(dict(common, anchors=["a", "b"], cuts=[[j, k]], flops=int(4e9 - 3e9 * w), top1=80 - 10 * w))
    for i, row in enumerate(out):
        row.update(stitch_id=i, params=10 + i, top1=row["top1"] + offset + rng.normal(0.0, noise))
    return out


def frame(groups: dict[str, float], seeds: int = 3, *, data_seed: int = 0, **kwargs) -> pd.DataFrame:
    rng = np.random.default_rng(data_seed)
    rows = []
    for group, offset in groups.items():
        for seed in range(seeds):
            for row in trial_rows(group, seed, offset=offset, rng=rng, **kwargs):
                rows.append(dict(row, sweep="s", trial_id=f"{group}-{seed}"))
    return pd.DataFrame(rows)


def test_a_planted_difference_is_detected():
    result = compare(frame({"uniform": 0.0, "sandwich": 1.0}), "sampling", resamples=1000)
    (row,) = result.rows
    assert (row["a"], row["b"]) == ("sandwich", "uniform")  # b - a = uniform - sandwich
    assert row["trials_a"] == row["trials_b"] == 3 and row["stitches"] == 13
    assert row["top1_diff"] == pytest.approx(-1.0, abs=0.25)
    assert row["top1_low"] < row["top1_diff"] < row["top1_high"] < 0
    assert row["hv_diff"] < 0 and row["hv_high"] < 0 and row["hv_low"] < row["hv_diff"]
    assert row["b_better"] < 0.2


def test_equal_groups_give_intervals_that_cover_zero():
    result = compare(frame({"uniform": 0.0, "sandwich": 0.0}), "sampling", resamples=1000)
    (row,) = result.rows
    assert row["top1_low"] < 0 < row["top1_high"]
    assert row["hv_low"] < 0 < row["hv_high"]


def test_intervals_cover_the_truth_about_as_often_as_claimed():
    hits = {"top1": 0, "hv": 0}
    detected = 0
    for k in range(30):
        (row,) = compare(frame({"u": 0.0, "v": 0.0}, data_seed=k), "sampling", resamples=500, seed=k).rows
        hits["top1"] += row["top1_low"] <= 0 <= row["top1_high"]
        hits["hv"] += row["hv_low"] <= 0 <= row["hv_high"]
        (row,) = compare(frame({"u": 0.0, "v": 0.6}, data_seed=100 + k), "sampling", resamples=500, seed=k).rows
        detected += row["top1_low"] > 0
    assert hits["top1"] >= 27 and hits["hv"] >= 27  # 95% intervals: about 28.5 of 30 expected
    assert detected >= 27  # a 0.6-point gain under 0.5-point noise is found nearly always


def test_point_estimates_by_hand_and_the_sweeps_hypervolume():
    df = frame({"u": 0.0, "v": 2.0}, seeds=2, noise=0.0)
    (row,) = compare(df, "sampling", resamples=200).rows
    assert row["top1_diff"] == pytest.approx(2.0) and row["b_better"] == 1.0
    assert row["top1_low"] == pytest.approx(2.0) and row["top1_high"] == pytest.approx(2.0)
    trial = df[df["trial_id"] == "u-0"]
    expected = hypervolume(zip(trial["flops"], trial["top1"]), 4e9)  # reference: the largest anchor's FLOPs
    assert row["hv_a"] == pytest.approx(expected) and row["flops_ref"] == 4e9


def test_only_different_seeds_are_replicates():
    once = frame({"u": 0.0, "v": 0.5}, seeds=3)
    again = once.assign(trial_id=once["trial_id"] + "-again")  # the same sweep run twice: every seed twice
    (alone,) = compare(once, "sampling", resamples=500).rows
    result = compare(pd.concat([once, again]), "sampling", resamples=500)
    (row,) = result.rows
    assert (row["trials_a"], row["trials_b"], row["seeds_a"], row["seeds_b"]) == (6, 6, 3, 3)
    assert {k: v for k, v in row.items() if k not in ("trials_a", "trials_b")} == \
        {k: v for k, v in alone.items() if k not in ("trials_a", "trials_b")}  # the intervals do not narrow
    assert any("6 trial(s) repeat the seed of another trial" in note and "only different seeds" in note
               for note in result.notes)
    text = format_comparison(result)
    assert "where a group has several seeds, seeds (trials of one seed count once)" in text
    assert [line.split()[2] for line in text.splitlines() if line.startswith("  u ")] == ["3/3"]
    # a repeat that differs (a rerun on another machine) is averaged into its seed's replicate
    drift = again.assign(top1=again["top1"] + 1.0)
    (mixed,) = compare(pd.concat([once, drift]), "sampling", resamples=200).rows
    assert mixed["top1_diff"] == pytest.approx(alone["top1_diff"]) and mixed["seeds_a"] == 3


def test_bootstrap_is_seeded():
    df = frame({"u": 0.0, "v": 0.3})
    first = compare(df, "sampling", resamples=300, seed=5).rows
    assert compare(df, "sampling", resamples=300, seed=5).rows == first
    assert compare(df, "sampling", resamples=300, seed=6).rows != first


def test_bias_corrected_interval():
    samples = np.random.default_rng(0).normal(1.0, 0.1, 20000)
    low, high = bootstrap_interval(samples, 1.0, 0.95)
    assert low == pytest.approx(1 - 0.196, abs=0.01) and high == pytest.approx(1 + 0.196, abs=0.01)
    assert bootstrap_interval(np.zeros(100), 0.0, 0.95) == (0.0, 0.0)


def test_compare_by_kernel_size_pairs_the_shared_stitches():
    rng = np.random.default_rng(1)
    rows = []
    for k in (2, 3):
        for seed in range(2):
            rows += [dict(r, sweep="s", trial_id=f"k{k}-{seed}")
                     for r in trial_rows(str(k), seed, rng=rng, kernel_size=k, by="kernel_size")]
    df = pd.DataFrame(rows)
    df["kernel_size"] = df["kernel_size"].astype(int)
    result = compare(df, "kernel_size", resamples=300)
    (row,) = result.rows
    assert (row["a"], row["b"]) == (2, 3)
    assert row["stitches"] == 13  # the anchors and the 11 plain cuts both windows hold
    assert result.spaces[0]["anchors"] == ["a", "b"] and "kernel_size" not in result.spaces[0]


def test_spaces_are_kept_apart_and_ignore_pools():
    df = pd.concat([frame({"u": 0.0}, seeds=2, epochs=3), frame({"v": 0.0}, seeds=2, data_seed=1)])
    df.loc[df["sampling"] == "v", "epochs"] = 5
    with pytest.raises(SNNetError, match=r"No comparable trials in the table: .* they also differ in epochs \(3, 5\)"
                                         r".*Pass --ignore epochs"):
        compare(df, "sampling")
    (row,) = compare(df, "sampling", ignore=["epochs"], resamples=200).rows
    assert row["trials_a"] == row["trials_b"] == 2


def test_a_rules_variants_compare_as_groups_of_their_own_and_pruning_is_a_setting(tmp_path):
    """Schema 11: two ``scored`` variants (their ``sampling_options``) are two groups beside ``uniform`` when
    comparing by sampling, and kept apart by any other column; pruned and unpruned trials (``prune_score``)
    never pool, and compare by prune_score pairs them (unpruned: 'none')."""
    front = json.dumps({"focus": "front", "score": "init_top1"}, sort_keys=True)
    df = pd.concat([frame({"uniform": 0.0}, seeds=2), frame({"scored": 0.0}, seeds=2, data_seed=1),
                    frame({"scored": 1.0}, seeds=2, data_seed=2, sampling_options=front)])
    df.loc[df["sampling_options"].notna(), "trial_id"] += "-front"
    df["prune_score"], df["prune_keep"] = None, None
    rows = compare(df, "sampling", resamples=200).rows
    assert sorted((r["a"], r["b"]) for r in rows) == [("scored", "scored(focus=front, score=init_top1)"),
                                                      ("scored", "uniform"),
                                                      ("scored(focus=front, score=init_top1)", "uniform")]
    ahead = next(r for r in rows if r["b"] == "scored(focus=front, score=init_top1)")
    assert ahead["top1_diff"] == pytest.approx(1.0, abs=0.3)
    by_kernel = compare(df[df["sampling"] == "scored"].assign(kernel_size=lambda d: 2 + d["seed"] % 2),
                        "kernel_size", resamples=200)
    assert len(by_kernel.rows) == 2 and sorted(s.get("sampling_options", "") for s in by_kernel.spaces) == ["", front]

    pruned = frame({"uniform": 0.0}, seeds=2).assign(prune_score="cka", prune_keep=0.5)
    pruned["trial_id"] += "-pruned"
    plain = frame({"uniform": 0.0, "sandwich": 0.5}, seeds=2, data_seed=3).assign(prune_score=None, prune_keep=None)
    both = pd.concat([pruned, plain])
    (row,) = compare(both, "sampling", resamples=200).rows  # the pruned uniform trials are not uniform's
    assert row["trials_a"] == row["trials_b"] == 2
    (row,) = compare(both[both["sampling"] == "uniform"], "prune_score", ignore=["prune_keep"], resamples=200).rows
    assert (row["a"], row["b"]) == ("cka", "none")


def test_mistakes_raise_one_paragraph():
    df = frame({"u": 0.0}, seeds=2)
    with pytest.raises(SNNetError, match=r"all 2 trial\(s\) with results have sampling='u'"):
        compare(df, "sampling")
    with pytest.raises(SNNetError, match="Cannot compare by 'flops': it varies within a trial"):
        compare(df, "flops")
    with pytest.raises(SNNetError, match="Cannot compare by 'nope': the catalog has no such column"):
        compare(df, "nope")


@pytest.fixture
def catalog(tmp_path):
    root = tmp_path / "catalog"
    df = frame({"uniform": 0.0, "sandwich": 0.8, "balanced": 0.1}, seeds=2)
    for trial, rows in df.groupby("trial_id"):
        records = rows.drop(columns=["sweep", "trial_id"]).to_dict("records")
        CatalogWriter(root, "rules").write_trial(trial, records)
    CatalogWriter(root, "other").write_trial("lonely", trial_rows("uniform", 0, rng=np.random.default_rng(2)))
    return root


def test_cli_table_csv_and_json(catalog, capsys):
    assert main(["compare", str(catalog), "--by", "sampling", "--sweep", "rules", "--resamples", "300"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("compare by sampling: differences are b - a; 95% bootstrap intervals")
    assert "space 1: anchors a, b; dataset=synthetic, epochs=3, init=ls, kernel_size=2, stride=1" in out
    lines = [line.split() for line in out.splitlines() if line.startswith("  ") and "/" in line]
    assert [(cells[0], cells[1], cells[2]) for cells in lines] == [
        ("balanced", "sandwich", "2/2"), ("balanced", "uniform", "2/2"), ("sandwich", "uniform", "2/2")]
    assert lines[0][6].endswith("]*") and lines[2][6].endswith("]*")  # sandwich is 0.8 points better

    assert main(["compare", str(catalog), "--by", "sampling", "--format", "json", "--resamples", "300"]) == 0
    report = json.loads(capsys.readouterr().out)
    pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
    assert pairs[("balanced", "uniform")]["trials_b"] == 3  # the other sweep's uniform trial shares the space
    assert report["spaces"][0]["anchors"] == ["a", "b"] and report["confidence"] == 0.95

    assert main(["compare", str(catalog), "--by", "sampling", "--format", "csv", "--resamples", "300"]) == 0
    table = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert len(table) == 3 and table.loc[0, "top1_diff"] == pytest.approx(pairs[("balanced", "sandwich")]["top1_diff"])
    assert len(load(catalog)) == 7 * 13


def test_cli_no_comparable_trials_is_one_paragraph_and_exit_2(catalog):
    result = subprocess.run([sys.executable, "-m", "orchestrator.catalog", "compare", str(catalog), "--by",
                             "sampling", "--sweep", "other"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: No comparable trials in ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "differ in sampling" in result.stderr


@pytest.mark.parametrize("args, words", [
    (["--by", "top1"], "varies within a trial"),
    (["--by", "sampling", "--confidence", "2"], "--confidence"),
    (["--by", "sampling", "--resamples", "ten"], "--resamples"),
    (["--by", "sampling", "--seed", "-1"], "--seed"),
    (["--by", "sampling", "--ignore", "nope"], "Cannot ignore 'nope'"),
])
def test_cli_mistakes_exit_2(catalog, capsys, args, words):
    assert main(["compare", str(catalog), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err


@pytest.mark.parametrize("by", ["preset", "mode", "data_fraction"])
def test_a_column_empty_in_every_trial_is_named_as_such(catalog, capsys, by):
    # every trial has top-1; none has a value of ``by`` (the catalog's schema holds it as null)
    assert main(["compare", str(catalog), "--by", by, "--resamples", "200"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"error: Cannot compare by {by!r}: none of the 7 trial(s) with top-1 results")
    assert f"has a value of {by} (it is empty in every one)" in captured.err
    assert "Setting columns that differ between them: sampling;" in captured.err
    assert "holds no trial with top-1" not in captured.err

    df = frame({"u": 0.0, "v": 0.3}, seeds=2)
    df["preset"] = None
    df.loc[df["sampling"] == "u", "preset"] = "small"  # only one value left: the other trials are named
    with pytest.raises(SNNetError, match=r"all 2 trial\(s\) with results have preset='small'.* Note: 2 trial\(s\) "
                                         r"without a value of preset were left out\.$"):
        compare(df, "preset")


def test_bootstrap_memory_is_bounded_and_does_not_depend_on_the_chunking(monkeypatch):
    import tracemalloc

    from orchestrator.catalog import _compare

    df = frame({"u": 0.0, "v": 0.2}, seeds=1, kernel_size=30)  # 321 stitches per trial
    compare(df, "sampling", resamples=100)  # imports done before measuring
    tracemalloc.start()
    try:
        rows = compare(df, "sampling", resamples=20_000, seed=3).rows
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 96 * 2**20  # drawing all 20000 x 321 resamples at once peaked at 252 MiB

    # the same generator drawing chunk after chunk gives the numbers of one draw of them all
    frames = [df, frame({"u": 0.0, "v": 0.3, "w": -0.1}, seeds=3)]
    for chunk in (1, 97, 10**9):  # one row at a time (two, numpy sums one row otherwise), odd, all at once
        monkeypatch.setattr(_compare, "_CHUNK_ELEMENTS", chunk)
        if chunk == 10**9:
            assert compare(df, "sampling", resamples=20_000, seed=3).rows == rows
        results = [compare(f, "sampling", resamples=301, seed=4).rows for f in frames]
        if chunk == 1:
            expected = results
        assert results == expected, chunk
