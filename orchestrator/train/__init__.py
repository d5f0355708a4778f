"""Train one stitched supernet on Ray Train.

The path of one run, module by module:

- ``__main__``: ``python -m orchestrator.train``: flags and ``--set`` into a
  :class:`~orchestrator.train.config.TrainConfig` (torch-free: a bad setting is answered before the
  training stack loads).
- :mod:`~orchestrator.train.prepare`: the driver settles and checks the settings (:mod:`~orchestrator.train.checks`)
  and builds the stitch space, before Ray starts; :mod:`~orchestrator.train.cluster` connects to Ray and checks
  that the workers fit.
- :mod:`~orchestrator.train.launch`: :func:`~orchestrator.train.launch.run_training` trains on Ray Train and
  returns the catalog rows; :func:`~orchestrator.train.launch.record_run` writes them.
- :mod:`~orchestrator.train.worker`: each Ray Train worker's entry point, which runs the recipe
  (:mod:`~orchestrator.train.recipe`, with :mod:`~orchestrator.train.steps`, :mod:`~orchestrator.train.evaluate`,
  :mod:`~orchestrator.train.state`; timm's parts in :mod:`~orchestrator.train.augment`,
  :mod:`~orchestrator.train.optim` and :mod:`~orchestrator.train.teacher`).
"""
