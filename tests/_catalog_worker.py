"""The worker of test_catalog's many-processes test, in a module of its own: each spawned process
imports only this and ``orchestrator.catalog`` (no torch), not test_catalog and what it imports."""


def write_one(args):
    root, trial, n = args
    from orchestrator.catalog import CatalogWriter

    rows = [{"stitch_id": i, "anchors": ["a", "b"], "cuts": [[i, i + 1]], "flops": 1000 + i, "params": 10 + i,
             "top1": float(i)} for i in range(n)]
    return CatalogWriter(root, "many").write_trial(trial, rows)
