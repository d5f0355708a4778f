"""Serving: one trial's supernet on Ray Serve, every stitch of its front switchable at runtime.

``python -m orchestrator.serve CATALOG`` (:mod:`orchestrator.serve.__main__`) checks everything it can,
then starts the application of :mod:`orchestrator.serve.app` (or writes its Serve config). Each replica
holds the supernet once (:mod:`orchestrator.serve.replica`); which stitch answers a request is decided by
:mod:`orchestrator.serve.policy` (pure Python, no Ray). Importing this package imports neither Ray nor
torch.
"""

from orchestrator.serve.policy import (
           POLICIES,
           Budget,
           LatencyProfile,
           RequestError,
           StitchInfo,
           candidates,
           choose,
           parse_budget,
)

__all__ = ["POLICIES", "Budget", "LatencyProfile", "RequestError", "StitchInfo", "candidates", "choose",
           "parse_budget"]
