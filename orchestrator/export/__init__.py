"""One stitch of the catalog as a standalone ``torch.export`` program with a JSON model card.

Usage (design brief, section 4)::

    python -m orchestrator.export CATALOG --out FILE.pt2 [--sweep S] --trial T --stitch N
    python -m orchestrator.export CATALOG --out FILE.pt2 [--sweep S] [--trial T] --max-flops 1.5G
    python -m orchestrator.export CATALOG --out FILE.pt2 --max-latency-ms 5 [--onnx] [--checkpoint URI]

The stitch is picked by its catalog row: ``--trial``/``--stitch`` name it (``--trial`` may be
left out when the selection holds one trial), a budget (``--max-flops``, ``--max-latency-ms``)
takes the most accurate stitch under it, as ``orchestrator.catalog.best_under`` does: on
``top1_selection``, the split held out of training, where every candidate row has it, else on
``top1``, the evaluation split (an older catalog, or trials run without a selection split), and
the summary and the card say which. The card reports both top-1s. The trial's
checkpoint (``<checkpoint>/state.pt``, a local folder or a URI pyarrow reads) is loaded with
``weights_only=True``; the supernet is rebuilt from the training settings and stitch space
stored in it (anchor weights come from the checkpoint, never from a hub or the anchors'
original files), LoRA updates of stitching layers are merged, and
:func:`snnet.extract.extract_stitch` keeps only the weights the stitch runs.

The steps (:func:`export_from_catalog`): choose the row (:func:`select_row`), check where its
checkpoint lies (:func:`check_checkpoint_location`), read the checkpoint back and rebuild the supernet
(:mod:`orchestrator.export.checkpoint`, which serving uses too), export and verify the stitch, write
the program and its card. Only the last two load torch: a mistake is answered without its import.

Export trusts nothing it reads: anchors are built from timm model names and the allow-listed
options of :data:`~orchestrator.export.checkpoint.ANCHOR_OPTIONS` only; a row's checkpoint outside
the storage that holds the catalog (the catalog's parent folder or bucket prefix, where ``runs/`` lies beside
``catalog/``) is refused unless the user names it with ``--checkpoint URI``.

Written files:

``FILE.pt2``
    ``torch.export.save`` of the program; ``torch.export.load(FILE).module()(x)`` runs it with
    plain PyTorch, without this project or timm. The batch dimension is dynamic when the model
    allows it. Inputs are normalised images, ``float32 [N, C, H, W]``.
``FILE.json``
    the model card: anchors, cuts, FLOPs, params, top-1/top-5 on the evaluation split,
    ``top1_selection`` (the held-out selection split; null without one), ``chosen_by`` (the column
    a budget chose on, null for a stitch named by id) and ``chosen_note`` (why not the selection
    split), latency, the source (catalog, sweep, trial, stitch, checkpoint), the input shape and
    normalisation, the code version.
``FILE.onnx``
    with ``--onnx``, when the ``onnx`` package is installed (skipped with a note otherwise).

A user's mistake (no such trial or stitch, nothing under the budget, a missing checkpoint, a
path that is not a catalog) prints ``error: <paragraph>`` and exits 2, without a traceback.
"""

from orchestrator.export._from_catalog import ExportError, ExportResult, export_from_catalog
from orchestrator.export._row import check_checkpoint_location, select_row, storage_root

__all__ = ["ExportError", "ExportResult", "check_checkpoint_location", "export_from_catalog", "select_row",
           "storage_root"]
