"""WebDataset tar shards, local or in object storage: ``wds:LOCATION``.

A dataset is a folder with ``train/`` and ``val/`` subfolders of ``.tar`` shards, or a training
shard pattern (``wds:s3://bucket/imagenet-train-{0000..1023}.tar``) whose validation shards sit
beside it; each sample is ``KEY.jpg``/``.png``/... plus ``KEY.cls`` (its class index).
:func:`shard_sets` lists a dataset's shards and counts their samples (from an ``_info.json``
index, :func:`write_info`, or the tar headers); :class:`WebDatasetShards` reads one split as a
stream through the same timm transforms as folders; :class:`KeySplit` holds samples out by a
seeded hash of their key (the selection split and ``data_fraction`` of streamed shards);
:func:`write_shards` writes samples as shards (``python -m orchestrator.data shard``). How a
rank reads its own shards is :mod:`orchestrator.data.loaders`' part.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from torch.utils.data import IterableDataset

from orchestrator.data.transforms import TransformOptions
from orchestrator.data.unreadable import Unreadable, decode_image
from orchestrator.storage import filesystem
from snnet import SNNetError

# pyarrow (the filesystems of local folders and object storage) is imported inside the functions that
# open one: importing orchestrator.data costs torch's import only.

__all__ = [
    "WDS_PREFIX",
    "WDS_LAYOUT",
    "INFO_FILE",
    "DATA_SALT",
    "is_wds",
    "expand_braces",
    "pa_errors",
    "ShardSet",
    "scan_shard",
    "shard_sets",
    "write_info",
    "KeySplit",
    "WebDatasetShards",
    "wds_datasets",
    "write_shards",
]

WDS_PREFIX = "wds:"
_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "tif", "tiff")
WDS_LAYOUT = (
    "A WebDataset is 'wds:LOCATION' (a local folder or a URI such as s3://bucket/path): either a folder "
    "with train/ and val/ subfolders of .tar shards, or a train shard pattern such as "
    "wds:s3://bucket/imagenet-train-{0000..1023}.tar whose validation shards sit beside it with 'val' "
    "or 'validation' in place of 'train'; each sample is KEY.jpg/.png plus KEY.cls (the class index)"
)
INFO_FILE = "_info.json"


def is_wds(spec: Any) -> bool:
    """Whether ``spec`` names WebDataset shards (a string starting with ``wds:``)."""
    return isinstance(spec, str) and spec.startswith(WDS_PREFIX)


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{0000..0003}`` (zero-padded ranges) and ``{a,b}`` (lists), left to right, like a shell."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        step = 1 if int(hi) >= int(lo) else -1
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    elif "," in body:
        items = body.split(",")
    else:
        raise SNNetError(f"{WDS_LAYOUT}; cannot expand '{{{body}}}' in {pattern!r} (use {{0000..0099}} or {{a,b}}).")
    head, tail = pattern[: m.start()], pattern[m.end() :]
    return [out for item in items for out in expand_braces(head + item + tail)]


def _natural(names: Iterable[str]) -> list[str]:
    # timm's natural sort ("2" before "10"), without importing timm for a listing
    return sorted(names, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s.lower())])


def _resolve_fs(location: str) -> tuple[Any, str, str]:
    """``(filesystem, path, query)`` for a local path or a URI (query parameters such as
    ``?endpoint_override=host:port&scheme=http`` configure pyarrow's S3 filesystem)."""
    query = location.partition("?")[2] if "://" in location else ""
    try:
        fs, path = filesystem(location)
    except (pa_errors() + (ValueError,)) as e:
        raise SNNetError(f"{WDS_LAYOUT}; cannot open {location!r}: {e}") from None
    return fs, path.rstrip("/"), query


def pa_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a pyarrow filesystem raises for a missing or unreachable file."""
    import pyarrow as pa

    return (OSError, pa.ArrowException)


def _list_tars(fs: Any, folder: str) -> list[str]:
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except pa_errors():
        return []
    return _natural(i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".tar"))


@dataclass(frozen=True)
class ShardSet:
    """The shards of one split: where they are, how many samples each holds."""

    spec: str
    split: str
    location: str  # folder or URI prefix (with its query), for re-opening the filesystem in workers
    folder: str  # the filesystem path of the shards' folder
    names: tuple[str, ...]
    lengths: tuple[int, ...]
    num_classes: int

    @property
    def size(self) -> int:
        return sum(self.lengths)

    def filesystem(self) -> Any:
        return _resolve_fs(self.location)[0]


def _split_shards(spec: str) -> dict[str, tuple[str, str, list[str]]]:
    """``{"train": (location, folder, names), "val": ...}`` for a ``wds:`` spec (listing only)."""
    rest = spec[len(WDS_PREFIX) :]
    if not rest:
        raise SNNetError(f"{WDS_LAYOUT}; {spec!r} names no location.")
    base, _, query = rest.partition("?") if "://" in rest else (rest, "", "")
    base = base.rstrip("/")
    q = f"?{query}" if query else ""
    last = base.rsplit("/", 1)[-1]
    if "{" in last or last.endswith(".tar"):
        parent = base.rsplit("/", 1)[0] if "/" in base else "."
        if "{" in parent:
            raise SNNetError(f"{WDS_LAYOUT}; braces may only stand in the shard's file name, not in {parent!r}.")
        fs, folder, _ = _resolve_fs(parent + q)
        present = set(_list_tars(fs, folder))
        train = expand_braces(last)
        missing = [n for n in train if n not in present]
        if missing:
            raise SNNetError(
                f"{WDS_LAYOUT}; {len(missing)} of the {len(train)} shard(s) of {spec!r} are missing in "
                f"{parent!r}: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}."
            )
        if "train" not in last:
            raise SNNetError(
                f"{WDS_LAYOUT}; {last!r} has no 'train' in its name, so its validation shards cannot be found."
            )
        # validation shards: the same name with val/validation for train and any digits for each brace
        parts = re.split(r"\{[^{}]*\}", last)
        regex = r"[^/]+".join(re.escape(p).replace("train", "(?:val|validation)") for p in parts)
        val = _natural(n for n in present if re.fullmatch(regex, n))
        if not val:
            raise SNNetError(
                f"{WDS_LAYOUT}; found the {len(train)} training shard(s) but no validation shards beside them "
                f"in {parent!r} (looked for {last.replace('train', 'val')!r} or 'validation')."
            )
        return {"train": (parent + q, folder, train), "val": (parent + q, folder, val)}
    out = {}
    for split in ("train", "val"):
        fs, folder, _ = _resolve_fs(f"{base}/{split}{q}")
        names = _list_tars(fs, folder)
        if not names:
            raise SNNetError(f"{WDS_LAYOUT}; {base + '/' + split!r} holds no .tar shards.")
        out[split] = (f"{base}/{split}{q}", folder, names)
    return out


def _read_info(fs: Any, folder: str) -> dict[str, Any]:
    try:
        with fs.open_input_stream(f"{folder}/{INFO_FILE}") as f:
            return json.loads(f.read())
    except (pa_errors() + (ValueError,)):
        return {}


def _key_ext(member_name: str) -> tuple[str, str]:
    # WebDataset's convention: the key is everything before the first dot of the file name
    folder, _, name = member_name.rpartition("/")
    stem, _, ext = name.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def scan_shard(fs: Any, path: str) -> tuple[int, int]:
    """``(samples, largest label + 1)`` of one shard from its tar headers and ``.cls`` members.

    Reads the headers of a local shard and all of a remote one: index remote shards once
    with :func:`write_info` (``python -m orchestrator.data index wds:...``).
    """
    import pyarrow.fs as pafs

    count, top = 0, 0
    # Local: seek from header to header. Object storage: one streamed GET (a seek is a request).
    local = isinstance(fs, pafs.LocalFileSystem)
    opened = fs.open_input_file(path) if local else fs.open_input_stream(path)
    with opened as f, tarfile.open(fileobj=f, mode="r:" if local else "r|") as tar:
        last = None
        for member in tar:
            if not member.isfile():
                continue
            key, ext = _key_ext(member.name)
            if key != last:
                count, last = count + 1, key
            if ext == "cls":
                try:
                    top = max(top, int(tar.extractfile(member).read().strip()) + 1)  # type: ignore[union-attr]
                except ValueError:
                    pass  # reported as unreadable when read
    return count, top


@functools.lru_cache(maxsize=16)
def shard_sets(spec: str) -> dict[str, ShardSet]:
    """The train and val :class:`ShardSet` of a ``wds:`` spec.

    Sample counts come from an ``_info.json`` beside the shards (timm's format:
    ``{"num_classes": N, "splits": {"train": {"filenames": [...], "shard_lengths": [...]}}}``;
    :func:`write_info` writes one) and otherwise from a scan of each shard's tar headers
    (fast on a local disk, one request per file in object storage: write the index once).
    """
    out = {}
    num_classes = 0
    for split, (location, folder, names) in _split_shards(spec).items():
        fs = _resolve_fs(location)[0]
        info = _read_info(fs, folder)
        known: dict[str, int] = {}
        for entry in (info.get("splits") or {}).values():
            known.update(zip(entry.get("filenames", []), entry.get("shard_lengths", [])))
        lengths = []
        for name in names:
            if name in known:
                lengths.append(int(known[name]))
            else:
                n, top = scan_shard(fs, f"{folder}/{name}")
                lengths.append(n)
                if split == "train":
                    num_classes = max(num_classes, top)
        if split == "train" and info.get("num_classes"):
            num_classes = max(num_classes, int(info["num_classes"]))
        if split == "train" and not num_classes:
            for name in names:  # counts came from the index, classes did not
                num_classes = max(num_classes, scan_shard(fs, f"{folder}/{name}")[1])
        out[split] = ShardSet(spec, split, location, folder, tuple(names), tuple(lengths), 0)
    classes = max(num_classes, 1)
    return {k: replace(v, num_classes=classes) for k, v in out.items()}


def write_info(spec: str) -> list[str]:
    """Scan a ``wds:`` dataset's shards and write ``_info.json`` beside them; returns what was written."""
    shard_sets.cache_clear()
    written = []
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for split, (location, folder, names) in _split_shards(spec).items():
        fs = _resolve_fs(location)[0]
        scans = [scan_shard(fs, f"{folder}/{n}") for n in names]
        entry = groups.setdefault((location, folder), {"splits": {}, "num_classes": 0})
        entry["splits"][split] = {
            "name": split, "num_samples": sum(c for c, _ in scans),
            "filenames": list(names), "shard_lengths": [c for c, _ in scans],
        }
        entry["num_classes"] = max(entry["num_classes"], *(t for _, t in scans))
    for (location, folder), entry in groups.items():
        fs = _resolve_fs(location)[0]
        with fs.open_output_stream(f"{folder}/{INFO_FILE}") as f:
            f.write(json.dumps(entry, indent=1).encode())
        written.append(f"{folder}/{INFO_FILE}")
    shard_sets.cache_clear()
    return written


#: :class:`KeySplit` salt of ``data_fraction``'s training subset of shards (independent of the selection split).
DATA_SALT = "data:"


@dataclass(frozen=True)
class KeySplit:
    """The selection split of WebDataset shards: a sample is held out when a seeded hash of its key
    (WebDataset's ``__key__``: its member names up to the first dot) falls under ``fraction``.

    The key alone decides, so every read, rank, loader worker and node agrees without
    coordination or a listing, and the training stream skips exactly what the selection stream
    keeps. The hash is ``blake2b`` (not Python's salted ``hash()``), so it is the same in every
    process and run; a larger ``fraction`` only adds samples. The held-out count is binomial
    around ``fraction`` of the samples (not stratified: labels come only with the images).
    ``salt`` makes an independent split of the same keys (``data_fraction``'s training subset).
    """

    fraction: float
    seed: int
    salt: str = ""

    def held_out(self, key: str) -> bool:
        digest = hashlib.blake2b(f"{self.salt}{self.seed}:{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self.fraction * 2**64

    def expected(self, size: int) -> int:
        """The expected held-out count of ``size`` samples (what ``len()`` reports; no shard is read)."""
        return round(size * self.fraction)


class WebDatasetShards(IterableDataset):
    """One split of a WebDataset (tar shards, local or in object storage), read as a stream.

    ``len()`` is the sample count (from the index or the tar headers; no image is decoded).
    :func:`~orchestrator.data.loaders.make_loader` gives each data-parallel rank its own shards
    (rank ``r`` of ``w`` reads shards ``r::w`` of a per-epoch seeded shuffle, so no node needs a
    copy of the whole set) and splits them further over the loader's worker processes. A sample
    whose image cannot be decoded or whose ``.cls`` is missing or not an integer becomes
    :class:`Unreadable`.

    With ``keys`` (a :class:`KeySplit`; :meth:`keyed`) the stream yields only the samples the
    split holds out (``held_out=True``: the selection split) or only the others (training);
    with ``subset`` (another :class:`KeySplit`), only those of them that ``subset`` holds out
    (``data_fraction``). ``len()`` is then the expected count, since the exact one is known only
    after a pass.
    """

    def __init__(self, shards: ShardSet, transform: Callable[[Any], Any], input_img_mode: str = "RGB",
                 keys: KeySplit | None = None, held_out: bool = False, subset: KeySplit | None = None):
        self.shards = shards
        self.transform = transform
        self.input_img_mode = input_img_mode
        self.num_classes = shards.num_classes
        self.classes = tuple(str(i) for i in range(shards.num_classes))
        self.split = shards.split
        self.keys, self.held_out, self.subset = keys, held_out, subset

    def keyed(self, keys: KeySplit | None, held_out: bool = False, transform: Callable[[Any], Any] | None = None,
              subset: KeySplit | None = None) -> WebDatasetShards:
        """The same shards keeping one side of ``keys`` and, with ``subset``, the part of it that
        ``subset`` holds out (read through ``transform``, default this one's)."""
        return WebDatasetShards(self.shards, transform or self.transform, self.input_img_mode, keys, held_out, subset)

    def keeps(self, key: str) -> bool:
        """Whether this dataset yields the sample with ``key`` (always, without ``keys`` and ``subset``)."""
        return ((self.keys is None or self.keys.held_out(key) == self.held_out)
                and (self.subset is None or self.subset.held_out(key)))

    def __len__(self) -> int:
        size = self.shards.size
        if self.keys is not None:
            held = self.keys.expected(size)
            size = held if self.held_out else size - held
        return size if self.subset is None else self.subset.expected(size)

    def __getitem__(self, index: int) -> Any:
        raise TypeError("WebDataset shards are read in order: use make_loader() or calibration_batches().")

    def __iter__(self) -> Iterator[Any]:  # every sample once, in shard order (single process)
        fs = self.shards.filesystem()
        for name in self.shards.names:
            yield from map(self.decode, self.read_shard(fs, name))

    def __repr__(self) -> str:
        part = "" if self.keys is None else f", {'held out' if self.held_out else 'kept'} by {self.keys}"
        part += "" if self.subset is None else f", subset {self.subset}"
        return (f"WebDatasetShards({self.shards.spec!r}, split={self.split!r}, shards={len(self.shards.names)}, "
                f"n={len(self)}{part})")

    def read_shard(self, fs: Any, name: str, keep: Callable[[int], bool] | None = None) -> Iterator[Any]:
        """The samples of one shard as encoded records ``(shard, key, {extension: bytes})``, for
        :meth:`decode` (``keep(i)`` picks by position within the shard, counting every sample;
        :meth:`keeps` then picks by key). A sample not taken is not extracted."""
        path = f"{self.shards.folder}/{name}"
        try:
            stream = fs.open_input_stream(path)
        except pa_errors() as e:
            raise SNNetError(f"cannot read the shard {path!r}: {e}") from None
        with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            index, key, members, taken = -1, None, {}, False
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = _key_ext(member.name)
                if k != key:
                    if taken:
                        yield name, key, members
                    index, key, members = index + 1, k, {}
                    taken = (keep is None or keep(index)) and self.keeps(k)
                if taken:
                    f = tar.extractfile(member)
                    members[ext] = f.read() if f is not None else b""
            if taken:
                yield name, key, members

    def decode(self, record: tuple[str, str, dict[str, bytes]]) -> Any:
        """One record of :meth:`read_shard` as ``(transformed image, label)``, or :class:`Unreadable`."""
        shard, key, members = record
        # in the train/ and val/ layout both splits may hold an s-0000.tar: name the shard by its folder too
        folder = self.shards.folder.rstrip("/").rsplit("/", 1)[-1]
        shard = f"{folder}/{shard}" if folder == self.split else shard
        where = f"{shard}:{key}"
        image_ext = next((e for e in _IMAGE_EXTS if e in members), None)
        if image_ext is None:
            return Unreadable(where, "no image member (.jpg, .png, ...)")
        where = f"{shard}:{key}.{image_ext}"
        try:
            label = int(members["cls"].strip())
        except (KeyError, ValueError):
            return Unreadable(where, "no integer .cls member")
        try:
            img = decode_image(members[image_ext], self.input_img_mode)
        except Exception as e:  # noqa: BLE001 - any decoding failure makes the sample unreadable
            return Unreadable(where, f"{type(e).__name__}: {e}")
        return self.transform(img), label

def wds_datasets(
    spec: str,
    image_size: int = 224,
    options: TransformOptions | None = None,
    **fields: Any,
) -> tuple[WebDatasetShards, WebDatasetShards]:
    """``(train, val)`` of a ``wds:`` dataset, with the same timm transforms (:class:`TransformOptions`,
    as ``options`` or by field name) as :func:`~orchestrator.data.folders.image_folder_datasets`."""
    sets = shard_sets(spec)
    options = TransformOptions.of(options, **fields)
    train_tf, val_tf = options.transforms(image_size)
    mode = options.input_img_mode
    return WebDatasetShards(sets["train"], train_tf, mode), WebDatasetShards(sets["val"], val_tf, mode)


def write_shards(
    samples: Iterable[tuple[str, bytes, int]],
    pattern: str,
    shard_size: int,
) -> list[str]:
    """Write ``(key, image bytes, label)`` samples into tar shards ``pattern % i`` (local paths;
    a pattern without ``%`` is one shard).

    Image bytes keep their format (the key's extension, e.g. ``"img7.jpg"``); each label goes
    into ``<key>.cls``. Returns the shard paths. Use :func:`write_info` afterwards for the index.
    """
    paths: list[str] = []
    tar = None
    count = 0
    try:
        for key, data, label in samples:
            if tar is None or count == shard_size:
                if tar is not None:
                    tar.close()
                if "%" not in pattern and paths:
                    raise ValueError(f"{pattern!r} names one shard but more than {shard_size} samples came.")
                paths.append(pattern % len(paths) if "%" in pattern else pattern)
                os.makedirs(os.path.dirname(os.path.abspath(paths[-1])), exist_ok=True)
                tar, count = tarfile.open(paths[-1], "w"), 0
            stem, _, ext = key.partition(".")
            for name, blob in ((key, data), (f"{stem}.cls", str(int(label)).encode())):
                entry = tarfile.TarInfo(name)
                entry.size, entry.mtime = len(blob), 0
                tar.addfile(entry, io.BytesIO(blob))
            count += 1
    finally:
        if tar is not None:
            tar.close()
    return paths
