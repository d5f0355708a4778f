"""The suite's own machinery: pytest-xdist receives the groups tests/conftest.py gives (every Ray test
on one worker, each other module on one). A pytest or xdist release that drops them silently would
run Ray tests on both workers at once, beside each other's clusters."""

import pytest


def test_xdist_groups_reach_the_scheduler(request):
    if not hasattr(request.config, "workerinput"):
        pytest.skip("not under pytest-xdist (-n 0)")
    if not request.config.getoption("loadgroup", False):  # xdist sets it on each worker for --dist loadgroup
        pytest.skip("not under --dist loadgroup")
    assert request.node.nodeid.endswith("@" + request.node.module.__name__), request.node.nodeid
