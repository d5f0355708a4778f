"""Search SN-Net's design space with Ray Tune + Optuna (``python -m orchestrator.sweep``).

The modules, in the order a sweep meets them:

- :mod:`.space`: the search space loaded with the command line's settings, its Tune config keys and trial count.
- :mod:`.preflight`: what is checked before Ray starts (locations, one trial's resources, every family and value).
- :mod:`.record`: the sweep's record beside its Tune experiment, and how a finished trial is known.
- :mod:`.rerun`: ``--rerun-best``, the best trials of a finished sweep again at full fidelity.
- :mod:`.tuner`: the Tuner, its searcher (:mod:`.searchers`), scheduler (:mod:`.schedulers`) and console lines.
- :mod:`.trial`: one trial, the Tune trainable, and the sweep's constants it reads (:class:`.trial.SweepContext`).
- :mod:`.driver`: :func:`.driver.run_sweep`, the steps above in order; :mod:`.report`: the report at the end.

What a resume relies on: the sweep records its space's fingerprint, the code version and the space in
``snnet-sweep.json`` beside the experiment, and ``--resume`` with an edited space stops before Ray starts
unless ``--accept-changed-space`` says so; each started trial records its resolved settings in
``snnet-trials/<trial_id>.json``; and a trial's catalog file, written once and atomically with its
reported result in the metadata, is the record of completion: a trial that finds its file complete
reports that result and trains nothing. A space with nothing to search runs one trial per seed without a
searcher; ``searcher.seeds`` repeats configurations.
"""
