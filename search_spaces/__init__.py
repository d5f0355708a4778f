"""Declarative search spaces for SN-Net sweeps: YAML files and the validated schema they load into.

A search space says which anchor families to stitch, which SN-Net space settings (window
kernel size k, step s, nearest stitching, direction; Pan, Cai and Zhuang, CVPR 2023) and
which training settings to search over, what one trial reserves, and how the sweep searches::

    name: demo                    # sweep name = catalog partition (letters, digits, _ . -)
    description: "..."
    dataset: demo                 # 'demo' or an ImageNet-layout folder (train/, val/)
    image_size: null              # null: the anchors' own resolution
    families:                     # candidates; the searcher picks one per trial
      - name: demo_vit
        demo: true                # the embedded demo ViTs, pretrained and cached by the orchestrator
        anchors: [snnet_demo_vit_tiny, snnet_demo_vit_small, snnet_demo_vit_base]
      - name: deit
        pretrained: true          # default for every anchor without a checkpoint
        kwargs: {}                # default timm.create_model kwargs for every anchor
        anchors:                  # small to large
          - deit_tiny_patch16_224
          - {name: deit_small_patch16_224, pretrained: true}
          - {name: deit_base_patch16_224, checkpoint: /path/to/file.pth, kwargs: {drop_path_rate: 0.1}}
    space:                        # a list searches over its values; a scalar is fixed
      kernel_size: [2, 3]         # (SpaceConfig defaults for keys left out)
      stride: [1, 2]
      nearest: true
      direction: fast-to-slow     # fast-to-slow | slow-to-fast | both
      two_way: false
    training:                     # TrainConfig fields; list = choice; {low, high, log} = range
      epochs: 3
      sampling: [uniform, sandwich, balanced]
      sampling_options: {sandwich: {num_random: 2}}   # per rule; the chosen rule's apply
      anchor_lr: {low: 1.0e-4, high: 1.0e-3, log: true}
      teacher: regnety_160        # fixed; a plain name loads hub weights
    resources:                    # per trial
      workers_per_trial: 2
      cpus_per_worker: 1
      gpus_per_worker: 0
    searcher:
      algorithm: tpe              # tpe | nsga2 | random | grid
      objectives: [hypervolume]   # hypervolume | train_cost | best_top1; nsga2 needs >= 2
      num_samples: 4
      max_concurrent_trials: null # null: derived from the cluster by the sweep driver
      scheduler: none             # none | asha
      seed: 0

Ranges are float or integer after the field they set (``epochs: {low: 10, high: 50}`` is an
:class:`IntRange`). ``training:`` takes every ``TrainConfig`` field except those set elsewhere
(:data:`TRAINING_SET_ELSEWHERE`: anchors, space settings, dataset, resources, catalog...).
Every problem in a file is reported at once, in one :class:`snnet.SNNetError` naming the file
and each problem's YAML path and line. ``search_spaces/README.md`` has the full reference.

``SearchSpace.to_dict()`` writes a space back in this format and ``SearchSpace.from_dict``
reads (and validates) it, so a space travels to Ray workers as plain data.

This package imports neither Ray nor Optuna (``orchestrator -> search_spaces -> snnet``).
"""

from .loader import load_space, shipped_spaces
from .schema import (
    ALGORITHMS,
    OBJECTIVES,
    SCHEDULERS,
    SPACE_FIELDS,
    TRAINING_FIELDS,
    TRAINING_SET_ELSEWHERE,
    AnchorEntry,
    Choice,
    Family,
    FloatRange,
    IntRange,
    Param,
    Resources,
    Searcher,
    SearchSpace,
)

__all__ = [
    "ALGORITHMS",
    "AnchorEntry",
    "Choice",
    "Family",
    "FloatRange",
    "IntRange",
    "OBJECTIVES",
    "Param",
    "Resources",
    "SCHEDULERS",
    "SPACE_FIELDS",
    "SearchSpace",
    "Searcher",
    "TRAINING_FIELDS",
    "TRAINING_SET_ELSEWHERE",
    "load_space",
    "shipped_spaces",
]
