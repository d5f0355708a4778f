"""Typed, validated settings of one supernet training run (defined in :mod:`search_spaces.training`).

``orchestrator -> search_spaces -> snnet``: the search-space schema derives its ``training:``
section from :class:`TrainConfig`'s own fields, so the model lives beside the schema and the
orchestrator imports it from here.
"""

from search_spaces.training import INITS, LS_MODES, MODES, PLACEMENTS, TrainConfig

__all__ = ["TrainConfig", "MODES", "INITS", "LS_MODES", "PLACEMENTS"]
