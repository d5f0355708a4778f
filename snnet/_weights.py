"""Where an anchor's weights come from: a local checkpoint, timm's hub weights, or nothing.

Checkpoint files are read with timm's own helpers (:func:`timm.models.load_state_dict`:
safetensors or ``torch.load(weights_only=True)``, trainer wrappers and DDP prefixes removed).
Their keys and shapes can be read without loading the tensors (safetensors' header, or
``torch.load(mmap=True, map_location="meta")``), which is what the driver-side check uses.

Hub weights go through ``timm.create_model(pretrained=True)``. Before that, the hub is probed
for a few seconds; when it cannot be reached, weights already in the local cache are handed to
timm as a file (``pretrained_cfg_overlay={"file": ...}``, timm's own override), and otherwise
the request fails at once with a paragraph on passing a local checkpoint, instead of a minute
of download retries.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import torch

from ._errors import SNNetError

__all__ = ["load_checkpoint", "checkpoint_shapes", "hub_source", "hub_reachable", "cached_hub_file",
           "classifier_keys", "head_mismatch", "offline_error", "HUB_PROBE_SECONDS"]

logger = logging.getLogger("snnet.anchors")

#: How long the reachability probe of the weights' host may take.
HUB_PROBE_SECONDS = 2.5


def _unreadable(path: str, e: BaseException) -> SNNetError:
    return SNNetError(
        f"Could not read checkpoint {path!r} as a safe weights-only file: {e}. "
        "Checkpoints must hold tensors only (torch.save of a state dict, or safetensors)."
    )


def _is_state_dict(state: Any) -> bool:
    return isinstance(state, Mapping) and all(isinstance(v, torch.Tensor) for v in state.values())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file without executing code from it.

    Through :func:`timm.models.load_state_dict` (``weights_only=True``): ``.safetensors`` files
    through safetensors, anything else through ``torch.load``; trainer wrappers
    (``{"state_dict": ...}``, ``{"model": ...}``) and DDP's ``module.`` prefix are removed.
    """
    from timm.models import load_state_dict

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SNNetError(f"Checkpoint file {path!r} does not exist or is not a file.")
    try:
        state = load_state_dict(path, use_ema=False, device="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise _unreadable(path, e) from None
    if not _is_state_dict(state):
        raise SNNetError(f"Checkpoint {path!r} holds a {type(state).__name__} that is not a state dict "
                         "(a mapping of names to tensors).")
    return dict(state)


def checkpoint_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a checkpoint's state dict, without reading the tensors' data."""
    from timm.models import clean_state_dict

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SNNetError(f"Checkpoint file {path!r} does not exist or is not a file.")
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        try:
            state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="meta", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise _unreadable(path, e) from None
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):  # the wrappers timm's load_state_dict(use_ema=False) opens
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not _is_state_dict(state):
        raise SNNetError(f"Checkpoint {path!r} holds a {type(state).__name__} that is not a state dict "
                         "(a mapping of names to tensors).")
    return {k: tuple(v.shape) for k, v in clean_state_dict(dict(state)).items()}


def classifier_keys(cfg: Mapping[str, Any], keys: Any) -> list[str]:
    """The keys among ``keys`` that belong to the classifier(s) named by a timm ``pretrained_cfg``."""
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return [k for k in keys if any(k.startswith(n + ".") for n in names)]


def head_mismatch(cfg: Mapping[str, Any], model_shapes: Mapping[str, tuple], ckpt_shapes: Mapping[str, tuple]) -> bool:
    """True when the checkpoint's classifier differs in shape from the model's (another class count)."""
    keys = classifier_keys(cfg, model_shapes)
    return any(k in ckpt_shapes and tuple(ckpt_shapes[k]) != tuple(model_shapes[k]) for k in keys)


# -- hub weights -------------------------------------------------------------------------------
def hub_source(cfg: Mapping[str, Any]) -> tuple[str, str] | None:
    """``("hf-hub", repo_id)`` or ``("url", url)``: where timm would fetch weights of a ``pretrained_cfg``."""
    if cfg.get("hf_hub_id"):
        return "hf-hub", str(cfg["hf_hub_id"])
    if cfg.get("url"):
        return "url", str(cfg["url"])
    return None


def cached_hub_file(cfg: Mapping[str, Any]) -> str | None:
    """A local copy of a ``pretrained_cfg``'s hub weights in huggingface_hub's or torch.hub's cache."""
    source = hub_source(cfg)
    if source is None:
        return None
    kind, where = source
    if kind == "hf-hub":
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        repo, _, revision = where.partition("@")
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        for name in names:
            found = try_to_load_from_cache(repo, name, revision=revision or None)
            if isinstance(found, str) and os.path.isfile(found):
                return found
        url = cfg.get("url")
    else:
        url = where
    if url:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlsplit(url).path))
        if os.path.isfile(path):
            return path
    return None


def _host(kind: str, where: str) -> tuple[str, int]:
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:  # the weights travel through the proxy: it is what must answer
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return parts.hostname or "", parts.port or 80
    if kind == "hf-hub":
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        parts = urlsplit(endpoint)
        return parts.hostname or "huggingface.co", parts.port or (443 if parts.scheme == "https" else 80)
    parts = urlsplit(where)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def hub_reachable(kind: str, where: str, timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the weights' host accepts a TCP connection within ``timeout`` seconds.

    ``HF_HUB_OFFLINE`` (huggingface_hub's own switch) counts as unreachable for hub weights.
    Name resolution is not covered by socket timeouts, so the probe runs in a daemon thread.
    """
    if kind == "hf-hub":
        try:
            from huggingface_hub import is_offline_mode

            if is_offline_mode():
                return False
        except ImportError:
            pass
    host, port = _host(kind, where)
    if not host:
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True, name="snnet-hub-probe")
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def offline_error(name: str, kind: str, where: str) -> SNNetError:
    host = _host(kind, where)[0]
    offline = " (HF_HUB_OFFLINE is set)" if kind == "hf-hub" and _hub_offline_flag() else ""
    return SNNetError(
        f"Pretrained weights for {name!r} come from {where} ({kind}), but {host or 'its host'} cannot be "
        f"reached from this machine{offline} and they are not in the local cache. Pass a local checkpoint "
        f"instead: NAME=PATH in --anchors (orchestrator.train --anchors {name}=/path/to/{name}.safetensors), "
        f"or `checkpoint: /path/to/file` for the anchor in the search-space YAML, or "
        f"AnchorSpec({name!r}, checkpoint='/path/to/file') in Python (.safetensors, or a .pth/.pt state "
        "dict). Or start from random weights: leave out --pretrained (or `pretrained: true` in the YAML, "
        "pretrained=True in Python)."
    )


def _hub_offline_flag() -> bool:
    try:
        from huggingface_hub import is_offline_mode

        return bool(is_offline_mode())
    except ImportError:
        return False
