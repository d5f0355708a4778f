"""What one serving replica holds and does, without Ray: the trial's supernet, loaded once, and the
served stitches' catalog rows and measured latencies; decoding a request's images; running a batch.

The supernet is rebuilt from the trial's checkpoint exactly as ``orchestrator.export`` rebuilds it
(:func:`~orchestrator.export.checkpoint.load_state`, :func:`~orchestrator.export.checkpoint.rebuild_supernet`:
weights only, anchors from allow-listed timm options, LoRA merged), so a served stitch computes what its exported
program computes. Every stitch runs through ``StitchedSupernet.forward(x, stitch)``, which holds no
per-call state: switching stitch between batches copies no weight, and concurrent batches for
different stitches cannot disturb each other.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from orchestrator.serve.policy import POLICIES, LatencyProfile, RequestError, StitchInfo

__all__ = ["ServeSettings", "ServedModel", "tensor_bytes", "profile_sizes"]

#: The most images one request may carry (a larger batch is split by the client).
MAX_IMAGES_PER_REQUEST = 256


@dataclass(frozen=True)
class ServeSettings:
    """Everything a replica needs, as plain JSON (the ``args`` of the Serve config's application)."""

    checkpoint: str
    stitches: tuple[dict[str, Any], ...]
    policy: str = "budget"
    slo_ms: float | None = None
    max_batch_size: int = 8
    batch_wait_ms: float = 5.0
    catalog: str | None = None
    sweep: str | None = None
    trial: str | None = None
    device: str = "cpu"
    profile_warmup: int = 2
    profile_repeats: int = 5
    #: ms per batch by stitch id and batch size, measured on the same hardware: replicas use it instead of
    #: measuring (a benchmark that deploys one application after another measures once); None: measure
    latency_profile: dict[str, dict[str, float]] | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.policy == "slo" and (self.slo_ms is None or self.slo_ms <= 0):
            raise ValueError("the slo policy needs slo_ms > 0")
        if self.policy == "fixed" and len(self.stitches) != 1:
            raise ValueError(f"the fixed policy serves exactly one stitch, got {len(self.stitches)}")
        if not self.stitches:
            raise ValueError("no stitch to serve")
        if self.max_batch_size < 1 or self.batch_wait_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_ms >= 0")
        object.__setattr__(self, "stitches", tuple(dict(s) for s in self.stitches))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stitches"] = [dict(s) for s in self.stitches]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServeSettings:
        data = dict(data)
        data["stitches"] = tuple(data.get("stitches") or ())
        return cls(**data)

    def infos(self) -> list[StitchInfo]:
        """The served stitches. They are ranked on the selection split's top-1 only when every one has it (the
        two splits' numbers are not comparable), else all on the evaluation top-1, as ``best_under`` does."""
        selection = all(_float(r.get("top1_selection")) is not None for r in self.stitches
                        if _float(r.get("top1")) is not None)  # a pruned stitch has neither
        return [StitchInfo(int(r["stitch_id"]), int(r["flops"]), int(r["params"]), _float(r.get("top1")),
                           _float(r.get("top5")), _float(r.get("top1_selection")) if selection else None,
                           tuple(r["anchors"]), tuple(tuple(int(v) for v in c) for c in r["cuts"]))
                for r in self.stitches]


def _float(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of the distinct tensor storages a module holds (parameters and buffers, shared ones once)."""
    seen: dict[int, int] = {}
    for t in [*module.parameters(), *module.buffers()]:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def profile_sizes(max_batch: int) -> list[int]:
    """The batch sizes a replica measures: powers of two below ``max_batch``, and ``max_batch`` itself."""
    sizes, n = [], 1
    while n < max_batch:
        sizes.append(n)
        n *= 2
    return [*sizes, max_batch]


class ServedModel:
    """The replica's model: the supernet rebuilt once, the served stitches, their measured latencies."""

    def __init__(self, settings: ServeSettings, *, profile: bool = True, log=print):
        # timm and the model code load with the replica's model, not with `python -m orchestrator.serve`'s start
        from orchestrator.export.checkpoint import load_state, rebuild_supernet, stitch_of

        self.settings = settings
        started = time.perf_counter()
        state = load_state(settings.checkpoint)
        self.net = rebuild_supernet(state)
        self.device = torch.device(settings.device)
        self.net.to(self.device).eval()
        self.config = state["train_config"]
        space = self.net.space
        self.stitch_of: dict[int, Any] = {}
        for row in settings.stitches:  # the checkpoint must hold each served row's stitch, as export checks
            self.stitch_of[int(row["stitch_id"])] = stitch_of(space, row)
        profile0 = space.profiles[0]
        self.input_size = tuple(int(v) for v in profile0.input_size)
        self.num_classes = int(space.profiles[-1].num_classes)
        self._transform = None
        self.load_s = time.perf_counter() - started
        self.stitches = settings.infos()
        if settings.latency_profile:
            given = settings.latency_profile
            self.stitches = [replace(s, latency=LatencyProfile({int(n): float(ms) for n, ms in given[str(s.stitch_id)]
                                                                .items()})) for s in self.stitches]
        elif profile:
            self.stitches = self.profile(log=log)

    # -- measurement ----------------------------------------------------------------------------

    def profile(self, sizes: Sequence[int] | None = None, *, log=print) -> list[StitchInfo]:
        """Each served stitch's milliseconds per batch, per batch size, on this replica (warm-up first)."""
        from snnet.latency import measure_latency

        sizes = list(sizes or profile_sizes(self.settings.max_batch_size))
        started = time.perf_counter()
        out = []
        for info in self.stitches:
            fixed = self.net.fix(self.stitch_of[info.stitch_id])
            ms = {n: measure_latency(fixed, self.input_size, batch_size=n, warmup=self.settings.profile_warmup,
                                     repeats=self.settings.profile_repeats, device=self.device) for n in sizes}
            out.append(replace(info, latency=LatencyProfile(ms)))
        self.profile_s = time.perf_counter() - started
        fast, slow = min(out, key=lambda s: s.latency_ms(1)), max(out, key=lambda s: s.latency_ms(1))
        log(f"serve: measured {len(out)} stitches at batch sizes {', '.join(map(str, sizes))} in "
            f"{self.profile_s:.1f} s on {self.device}: batch 1 takes {fast.latency_ms(1):.3g} ms (stitch "
            f"{fast.stitch_id}) to {slow.latency_ms(1):.3g} ms (stitch {slow.stitch_id}); batch {sizes[-1]} "
            f"{min(s.latency_ms(sizes[-1]) for s in out):.3g}-{max(s.latency_ms(sizes[-1]) for s in out):.3g} ms")
        return out

    @property
    def model_bytes(self) -> int:
        return tensor_bytes(self.net)

    # -- requests -------------------------------------------------------------------------------

    def expected_shape(self) -> str:
        c, h, w = self.input_size
        return f"[{c}, {h}, {w}] (channels x height x width, floats normalised as the card says)"

    def decode(self, body: Mapping[str, Any]) -> torch.Tensor:
        """The request's images as one ``float32 [N, C, H, W]`` tensor (RequestError 400 otherwise)."""
        keys = [k for k in ("image", "image_b64", "images") if k in body]
        if len(keys) != 1:
            raise RequestError(400, "Send exactly one of 'image' (a nested list " + self.expected_shape() + "), "
                                    "'image_b64' (a base64 PNG or JPEG file) or 'images' (a list of either); "
                               f"this request has {', '.join(keys) if keys else 'none of them'}.",
                               expected_shape=list(self.input_size))
        key = keys[0]
        items = body[key]
        if key == "images":
            if not isinstance(items, list) or not items:
                raise RequestError(400, "'images' must be a non-empty list of images.",
                                   expected_shape=list(self.input_size))
            if len(items) > MAX_IMAGES_PER_REQUEST:
                raise RequestError(400, f"'images' holds {len(items)} images; send at most "
                                        f"{MAX_IMAGES_PER_REQUEST} per request.")
        else:
            items = [items]
            if key == "image_b64" and not isinstance(items[0], str):
                raise RequestError(400, "'image_b64' must be a base64 string of a PNG or JPEG file.")
        if key == "image" and isinstance(items[0], str):
            raise RequestError(400, "'image' must be a nested list " + self.expected_shape() + "; send an image "
                                    "file as 'image_b64'.", expected_shape=list(self.input_size))
        tensors = [self._image(item, i if key == "images" else None) for i, item in enumerate(items)]
        return torch.stack(tensors)

    def _image(self, item: Any, index: int | None) -> torch.Tensor:
        where = f"images[{index}]" if index is not None else "the image"
        if isinstance(item, str):
            return self._decode_file(item, where)
        try:
            x = torch.tensor(item, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise RequestError(400, f"{where} is not a nested list of numbers of shape "
                                    f"{self.expected_shape()}.", expected_shape=list(self.input_size)) from None
        if tuple(x.shape) != self.input_size:
            raise RequestError(400, f"{where} has shape {list(x.shape)}; this model takes "
                                    f"{self.expected_shape()}.", expected_shape=list(self.input_size))
        if not torch.isfinite(x).all():
            raise RequestError(400, f"{where} holds NaN or infinite values.")
        return x

    def _decode_file(self, text: str, where: str) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{where}: 'image_b64' is not valid base64.") from None
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                mode = "L" if self.input_size[0] == 1 else "RGB"
                return self.transform()(img.convert(mode))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise RequestError(400, f"{where} is not a readable PNG or JPEG image ({type(e).__name__}).") from None

    def transform(self):
        """The evaluation transform the trial's data used (timm's: resize, centre crop, normalise)."""
        if self._transform is None:
            from orchestrator.data import DEMO_MEAN, DEMO_STD, TransformOptions
            from orchestrator.train.config import TrainConfig

            config = TrainConfig.model_validate(self.config)
            size = self.input_size[-1]
            if config.dataset == "demo":
                options = TransformOptions(mean=DEMO_MEAN, std=DEMO_STD, interpolation="bilinear", crop_pct=1.0,
                                           input_img_mode="L")
            else:
                options = TransformOptions.from_config(config)
            self._transform = options.transforms(size)[1]
        return self._transform

    def run(self, x: torch.Tensor, stitch_id: int) -> torch.Tensor:
        """Logits of ``x`` along one served stitch (float32, on the CPU)."""
        with torch.inference_mode():
            return self.net(x.to(self.device), self.stitch_of[stitch_id]).float().cpu()


def top5(logits: torch.Tensor) -> list[list[list[float]]]:
    """Per image, ``[[class, probability], ...]`` of the (up to) five most probable classes."""
    probs = torch.softmax(logits.float(), dim=-1)
    values, classes = probs.topk(min(5, probs.shape[-1]), dim=-1)
    return [[[int(c), round(float(p), 6)] for c, p in zip(cs, vs)] for cs, vs in zip(classes, values)]
