"""The sweep's console: one line per trial event (``orchestrator.sweep.tuner.trial_lines``), not Tune's status
boxes. Unit tests with stand-in trials; ``tests/test_sweep_faults.py`` checks a real sweep's console."""

from __future__ import annotations

from types import SimpleNamespace

from orchestrator.sweep.tuner import trial_lines


def _trial(trial_id: str, **result) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"space__kernel_size": 3, "training__anchor_lr": 1.234e-4,
                                                      "training__sampling": "balanced"},
                           last_result=result, path=f"/runs/exp/trial_{trial_id}")


def test_one_line_per_trial_start_finish_and_failure(capsys):
    callback = trial_lines(["hypervolume", "train_cost"], total=2)
    a = _trial("a1", hypervolume=0.56914, train_cost=5.07e-6, best_top1=86.6667, num_stitches=51)
    callback.on_trial_start(iteration=0, trials=[a], trial=a)
    callback.on_trial_complete(iteration=1, trials=[a], trial=a)
    b = _trial("b2")
    callback.on_trial_start(iteration=2, trials=[a, b], trial=b)
    callback.on_trial_error(iteration=3, trials=[a, b], trial=b)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[snnet] trial a1 started (1 of 2): kernel_size=3, anchor_lr=0.000123, sampling=balanced"
    assert lines[1].startswith("[snnet] trial a1 done in ") and lines[1].endswith(
        "s (1 finished): hypervolume 0.5691, train_cost 5.07e-06, best top-1 86.7%, 51 stitches in the catalog")
    assert lines[2].startswith("[snnet] trial b2 started (2 of 2)")
    assert lines[3].startswith("[snnet] trial b2 failed (") and "/runs/exp/trial_b2/error.txt" in lines[3]
    assert len(lines) == 4


def test_a_trial_without_searched_settings_or_results_still_gets_its_lines(capsys):
    callback = trial_lines(["hypervolume"])
    trial = SimpleNamespace(trial_id="c3", config={}, last_result={}, path="/runs/exp/c3")
    callback.on_trial_start(iteration=0, trials=[trial], trial=trial)
    callback.on_trial_complete(iteration=1, trials=[trial], trial=trial)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[snnet] trial c3 started (1 so far): the space's settings"
    assert lines[1].endswith("(1 finished): no objective reported")


def test_the_callback_pickles_after_ray_replaces_print(monkeypatch):
    """Tune pickles the callback into its experiment state; in a driver Ray has replaced builtins.print."""
    import builtins

    from ray import cloudpickle

    monkeypatch.setattr(builtins, "print", lambda *a, **k: None)
    callback = cloudpickle.loads(cloudpickle.dumps(trial_lines(["hypervolume"], total=3)))
    assert callback.done == 0
