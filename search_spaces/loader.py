"""Find and read search-space YAML files: the shipped ones by name, any other by path."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from snnet import SNNetError

from ._parse import parse_space
from .schema import SearchSpace

__all__ = ["load_space", "shipped_spaces"]

_SUFFIXES = (".yaml", ".yml")


def shipped_spaces() -> list[str]:
    """Names of the search spaces shipped in this package (``search_spaces/<name>.yaml``), sorted."""
    return sorted(r.name[: -len(".yaml")] for r in resources.files(__package__).iterdir() if r.name.endswith(".yaml"))


def load_space(name_or_path: str | os.PathLike[str], *, check_models: bool = True) -> SearchSpace:
    """Load and validate a search space.

    Args:
        name_or_path: a shipped space's bare name (``demo``, ``deit_ti_s_b``; see
            :func:`shipped_spaces`) or the path of a YAML file.
        check_models: look up every non-demo anchor (and teacher) name in timm's registry.

    Raises:
        SNNetError: one paragraph naming the file and every problem in it (YAML path and line).
    """
    text = os.fspath(name_or_path)
    bare = not isinstance(name_or_path, os.PathLike) and "/" not in text and os.sep not in text \
        and not text.endswith(_SUFFIXES)
    if bare and text in shipped_spaces():
        resource = resources.files(__package__) / f"{text}.yaml"
        return _parse_text(resource.read_text(encoding="utf-8"), str(resource), check_models)
    path = Path(text).expanduser()
    if bare and not path.is_file():
        raise SNNetError(
            f"Unknown search space {text!r}: give the path of a YAML file or the name of a shipped space "
            f"({', '.join(shipped_spaces())})."
        )
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SNNetError(f"Search space file {text!r} does not exist.") from None
    except IsADirectoryError:
        raise SNNetError(f"Search space {text!r} is a directory; give a YAML file.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SNNetError(f"Cannot read search space file {text!r}: {e}.") from None
    return _parse_text(content, text, check_models)


# -- YAML with line numbers and no silent duplicate keys ---------------------------------------
class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys (which it would otherwise overwrite silently)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key; construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_map(node: Any, path: str = "", out: dict[str, int] | None = None) -> dict[str, int]:
    """YAML path (``space.kernel_size[1]``) -> 1-based line, for every key and list item."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                sub = f"{path}.{key_node.value}" if path else key_node.value
                out[sub] = key_node.start_mark.line + 1
                _line_map(value_node, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            out[sub] = item.start_mark.line + 1
            _line_map(item, sub, out)
    return out


def _parse_text(text: str, source: str, check_models: bool) -> SearchSpace:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(str(x) for x in (e.context, e.problem) if x)
        raise SNNetError(f"Search space {source} is not valid YAML{where}: {what}.") from None
    except yaml.YAMLError as e:
        raise SNNetError(f"Search space {source} is not valid YAML: {e}.") from None
    finally:
        loader.dispose()
    return parse_space(data, source, check_models=check_models, lines=_line_map(node) if node is not None else {})
