"""Experiment configs as data: frozen dataclasses to and from plain dicts, TOML files and ``--set`` items.

A config class is a (frozen) dataclass whose fields are ``int``, ``float``, ``str``, ``bool``, ``X | None``,
``tuple[X, ...]``, other (nested) config dataclasses, and a few more (``list[X]``, fixed-length tuples,
``dict[str, X]``, ``Literal[...]``, enums, ``Any``). Values are checked against the field types *before* the
class is built, so a typo or a wrong type is reported with its key path (``train.lr``) and what is allowed,
instead of surfacing later as a confusing error; the dataclass's own ``__post_init__`` then checks ranges.

TOML has no null. An ``X | None`` field reads the string ``"none"`` (or ``"null"``, any case) as ``None``
when ``X`` does not take that string itself (``int | None``, ``tuple[str, ...] | None``; not ``str | None``),
so ``ablation_level = "none"`` in a file and ``--set ablation_level=none`` both unset a field.

Typical use::

    cfg = build_config(E2Config, defaults={"train": {"epochs": 5}}, file="run.toml", sets=["train.lr=0.01"])
    Path("config.toml").write_text(dump_toml(cfg, header="E2 config"))

Precedence in :func:`build_config`: ``defaults`` < the TOML file < the ``--set`` items.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import enum
import functools
import numbers
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import tomli_w

__all__ = [
    "ConfigError",
    "build_config",
    "config_from_dict",
    "config_to_dict",
    "dump_toml",
    "load_toml",
    "merge",
    "parse_set",
]

T = TypeVar("T")

_MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A config that cannot be read or built. The message names the key path (``train.lr``) and what is
    allowed there; ``path`` holds the key path where there is one (else ``None``)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class _Mismatch(ConfigError):
    """A value of the wrong type (or shape) at ``path``. ``specific``: the value has the right kind but is
    wrong in detail (a list of the wrong length), so a union reports this rather than its own summary."""

    def __init__(self, message: str, path: str | None = None, specific: bool = False) -> None:
        super().__init__(message, path)
        self.specific = specific


# --------------------------------------------------------------------------------------------------------
# helpers


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _got(value: Any) -> str:
    return f"got {_show(value)} ({type(value).__name__})"


def _check_config_class(cls: Any) -> None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:  # noqa: BLE001 - an annotation naming something not importable at runtime
        raise TypeError(f"cannot resolve the field types of {cls.__name__}: {exc}") from exc


def _init_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _field_default(f: dataclasses.Field, inherited: Any) -> Any:
    """The value a field takes when its key is missing: the parent's default instance's value where the
    parent field has a default instance (``field(default_factory=...)``), else the field's own default."""
    if inherited is not None:
        return getattr(inherited, f.name)
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _type_repr(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    if _is_union(tp):
        return " | ".join(_type_repr(a) for a in typing.get_args(tp))
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in typing.get_args(tp)) + "]"
    if origin is not None:
        args = typing.get_args(tp)
        name = getattr(origin, "__name__", str(origin))
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{_type_repr(args[0])}, ...]"
        return f"{name}[" + ", ".join(_type_repr(a) for a in args) + "]"
    return getattr(tp, "__name__", str(tp))


def _describe(tp: Any) -> str:
    """What a value of type ``tp`` looks like in a config, for messages."""
    if tp is bool:
        return "true or false (bool)"
    if tp is int:
        return "an integer (int)"
    if tp is float:
        return "a number (float)"
    if tp is str:
        return "a string (str)"
    if tp is type(None):
        return "None (unset)"
    if _is_union(tp):
        args = typing.get_args(tp)
        parts = [_describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("None")
        return " or ".join(parts)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list, Sequence):
        return f"a list ({_type_repr(tp)})"
    if origin in (dict, Mapping):
        return f"a table ({_type_repr(tp)})"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return f"a table of {tp.__name__} options"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    return f"a {_type_repr(tp)}"


def _mismatch(tp: Any, value: Any, path: str, extra: str = "") -> _Mismatch:
    return _Mismatch(f"{path or 'the value'} must be {_describe(tp)}, {_got(value)}{extra}", path)


# --------------------------------------------------------------------------------------------------------
# to plain data


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """``cfg`` (a dataclass instance) as plain JSON/TOML-able data: nested dataclasses become dicts, tuples
    become lists, enums their values; ``None`` stays ``None``. Only the fields accepted by the constructor
    are included, so ``config_from_dict(type(cfg), config_to_dict(cfg)) == cfg``."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"config_to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return _plain(cfg)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in _init_fields(type(obj))}
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return _plain(obj.value)
    return obj


# --------------------------------------------------------------------------------------------------------
# from plain data


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, path: str = "") -> T:
    """Build ``cls`` (a dataclass) from plain data, strictly.

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key path and what is
    allowed; missing keys take the dataclass defaults. Errors raised by the dataclass's own ``__post_init__``
    come back as :class:`ConfigError` too, prefixed with the path of the dataclass being built. ``path`` is
    the key path of ``data`` inside a larger config (used in messages only).
    """
    _check_config_class(cls)
    return _build(cls, data, path, cls.__name__, None)


def _build(cls: type, data: Any, path: str, root: str, inherited: Any) -> Any:
    if not isinstance(data, Mapping):
        raise _mismatch(cls, data, path)
    fields = _init_fields(cls)
    names = [f.name for f in fields]
    unknown = [k for k in data if not isinstance(k, str) or k not in names]
    if unknown:
        raise _unknown_key_error(unknown, names, path, root)
    hints = _hints(cls)
    if inherited is not None and not isinstance(inherited, cls):
        inherited = None
    kwargs: dict[str, Any] = {}
    for f in fields:
        key_path = _join(path, f.name)
        if f.name in data:
            default = _field_default(f, inherited) if _wants_default_instance(hints[f.name]) else None
            kwargs[f.name] = _convert(hints[f.name], data[f.name], key_path, root, default)
        elif inherited is not None:
            kwargs[f.name] = getattr(inherited, f.name)
        elif f.default is _MISSING and f.default_factory is _MISSING:
            raise ConfigError(
                f"missing required key '{key_path}' in the {root} config; it must be {_describe(hints[f.name])}",
                key_path,
            )
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        where = f"in '{path}'" if path else f"in the {root} config"
        raise ConfigError(f"{where}: {exc}", path or None) from exc


def _wants_default_instance(tp: Any) -> bool:
    """Whether a field of type ``tp`` may hold a nested dataclass (whose missing keys then come from the
    field's default instance)."""
    candidates = typing.get_args(tp) if _is_union(tp) else (tp,)
    return any(isinstance(c, type) and dataclasses.is_dataclass(c) for c in candidates)


def _unknown_key_error(unknown: list[Any], names: list[str], path: str, root: str) -> ConfigError:
    shown = ", ".join(f"'{_join(path, k)}'" for k in unknown)
    noun = "key" if len(unknown) == 1 else "keys"
    where = f"under '{path}'" if path else "(top level)"
    allowed = ", ".join(names) if names else "(none)"
    msg = f"unknown {noun} {shown} in the {root} config; allowed keys {where}: {allowed}"
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.6)
        if close:
            hints.append(f"'{close[0]}'" if len(unknown) == 1 else f"'{close[0]}' for '{k}'")
    if hints:
        msg += "; did you mean " + ", ".join(hints) + "?"
    first = unknown[0]
    return ConfigError(msg, _join(path, first))


def _convert(tp: Any, value: Any, path: str, root: str, default: Any = None) -> Any:
    """``value`` checked against (and converted to) type ``tp``."""
    if tp is Any or tp is object:
        return value
    if tp is type(None):
        if value is not None:
            raise _mismatch(tp, value, path)
        return None
    if _is_union(tp):
        return _convert_union(tp, value, path, root, default)
    if tp is bool:
        if not isinstance(value, bool):
            raise _mismatch(tp, value, path)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            extra = " (write it without a decimal point)" if _integral_float(value) else ""
            raise _mismatch(tp, value, path, extra)
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _mismatch(tp, value, path)
        try:
            return float(value)
        except OverflowError:
            raise _Mismatch(f"{path} must be {_describe(tp)}, got {_show(value)} (too large for a float)", path)
    if tp is str:
        if not isinstance(value, str):
            raise _mismatch(tp, value, path)
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        for allowed in args:
            if type(value) is type(allowed) and value == allowed:
                return allowed
        raise _mismatch(tp, value, path)
    if origin in (tuple, list, Sequence):
        return _convert_sequence(tp, origin, args, value, path, root)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _mismatch(tp, value, path)
        key_tp, val_tp = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            k = _convert(key_tp, k, path, root)
            out[k] = _convert(val_tp, v, _join(path, k), root)
        return out
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return _build(tp, value, path, root, default)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if value == member.value and type(value) is type(member.value):
                return member
        raise _mismatch(tp, value, path)
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise _mismatch(tp, value, path)
        return value
    raise TypeError(f"{path}: unsupported field type {_type_repr(tp)} in a config class")


def _integral_float(value: Any) -> bool:
    return isinstance(value, float) and value.is_integer()


_NONE_WORDS = ("none", "null")


def _convert_union(tp: Any, value: Any, path: str, root: str, default: Any) -> Any:
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise _mismatch(tp, value, path)
    options = [a for a in args if a is not type(None)]
    deeper: _Mismatch | None = None
    for option in options:
        try:
            return _convert(option, value, path, root, default)
        except _Mismatch as exc:
            if (exc.path != path or exc.specific) and deeper is None:
                deeper = exc  # the value has the right shape; something inside it is wrong
    if deeper is not None:
        raise deeper
    if type(None) in args and isinstance(value, str) and value.strip().lower() in _NONE_WORDS:
        return None  # TOML has no null: "none" stands for None where no other option takes the string
    raise _mismatch(tp, value, path)


def _convert_sequence(tp: Any, origin: Any, args: tuple, value: Any, path: str, root: str) -> Any:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        hint = ""
        if isinstance(value, str):
            hint = f" (write a list: [{value!r}])"
        raise _mismatch(tp, value, path, hint)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if args == ((),):  # tuple[()]
            args = ()
        if len(value) != len(args):
            raise _Mismatch(
                f"{path} must be {_describe(tp)} of exactly {len(args)} item(s), got {len(value)}: {_show(value)}",
                path,
                specific=True,
            )
        return tuple(_convert(a, v, f"{path}[{i}]", root) for i, (a, v) in enumerate(zip(args, value)))
    item_tp = args[0] if args else Any
    items = [_convert(item_tp, v, f"{path}[{i}]", root) for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


# --------------------------------------------------------------------------------------------------------
# TOML


def dump_toml(cfg: Any, *, header: str | None = None) -> str:
    """The full config ``cfg`` as TOML that :func:`load_toml` / :func:`config_from_dict` read back exactly.

    Nested dataclasses (and dict fields) become ``[tables]``. TOML has no null: a field whose value is
    ``None`` and whose default is ``None`` is written as a comment (``# key = (unset: default)``) and comes
    back as the default. A field set to ``None`` against a non-None default (``ablation_level = None`` to
    skip the ablation) is written as ``key = "none"``, which :func:`config_from_dict` reads as ``None`` for
    an ``X | None`` field whose ``X`` does not take strings; where ``X`` does (``str | None``), the value
    cannot be represented and :class:`ConfigError` is raised. ``header`` lines become leading ``# ``
    comments.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"dump_toml expects a dataclass instance, got {type(cfg).__name__}")
    lines: list[str] = []
    if header is not None:
        lines.extend(f"# {line}".rstrip() for line in header.splitlines())
        lines.append("")
    _emit_table(cfg, [], None, lines)
    while lines and lines[-1] == "":
        lines.pop()
    text = "\n".join(lines) + "\n"
    return text


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    if _BARE_KEY.fullmatch(key):
        return key
    return tomli_w.dumps({"k": key})[len("k = ") :].strip()


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping) or (dataclasses.is_dataclass(value) and not isinstance(value, type))


def _emit_table(obj: Any, keys: list[str], inherited: Any, lines: list[str]) -> None:
    """Append the lines of one table: its plain values (and unset-field lines), in field order, then its
    subtables."""
    path = ".".join(keys)
    tables: list[tuple[str, Any, Any]] = []  # (key, value, inherited default for a nested dataclass)
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ConfigError(f"{_join(path, k)}: TOML keys must be strings, got {type(k).__name__}", path)
            if _is_table(v):
                tables.append((k, v, None))
            else:
                lines.append(_toml_line(k, v, _join(path, k)))
    else:
        cls = type(obj)
        if inherited is not None and not isinstance(inherited, cls):
            inherited = None
        for f in _init_fields(cls):
            value = getattr(obj, f.name)
            default = _field_default(f, inherited)
            if value is None:
                lines.append(_unset_line(cls, f, default, _join(path, f.name)))
            elif _is_table(value):
                tables.append((f.name, value, default if dataclasses.is_dataclass(default) else None))
            else:
                lines.append(_toml_line(f.name, value, _join(path, f.name)))
    for k, v, default in tables:
        sub = [*keys, k]
        if lines and lines[-1] != "":
            lines.append("")
        lines.append("[" + ".".join(_toml_key(s) for s in sub) + "]")
        _emit_table(v, sub, default, lines)


def _unset_line(cls: type, f: dataclasses.Field, default: Any, path: str) -> str:
    """The line for a field whose value is None (see :func:`_unset_written_as`)."""
    key = _toml_key(f.name)
    if _unset_written_as(cls, f, default, path) is _OMIT:
        return f"# {key} = (unset: default)"
    return f'{key} = "none"  # unset (None); the default is {_show(default)}'


_OMIT = object()


def _unset_written_as(cls: type, f: dataclasses.Field, default: Any, path: str) -> Any:
    """How a field whose value is None is written: left out (``_OMIT``) where its default is None, else
    as the string ``"none"`` where the field's type does not take that string as a string (so it reads
    back as None); otherwise it cannot be represented and :class:`ConfigError` is raised."""
    if default is None:
        return _OMIT
    tp = _hints(cls)[f.name]
    try:
        representable = _convert(tp, "none", path, cls.__name__) is None
    except ConfigError:
        representable = False
    if representable:
        return "none"
    shown = "it has no default" if default is _MISSING else f"its default is {_show(default)}"
    raise ConfigError(
        f"{path} is None, which TOML cannot represent: {shown}, so leaving it out would not give None back, "
        f"and its type {_type_repr(tp)} would read the string 'none' as a string",
        path,
    )


def _toml_line(key: str, value: Any, path: str) -> str:
    data = _toml_value(value, path)
    try:
        return tomli_w.dumps({key: data}).rstrip("\n")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be written as TOML: {exc}", path) from exc


def _toml_value(obj: Any, path: str) -> Any:
    """``obj`` as data tomli_w writes (inside arrays: inline tables). Unset fields of a dataclass inside an
    array are left out (they come back as their defaults); any other None cannot be represented."""
    if obj is None:
        raise ConfigError(f"{path} is None, which TOML cannot represent inside a list or table", path)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in _init_fields(type(obj)):
            value, key_path = getattr(obj, f.name), _join(path, f.name)
            if value is None:
                written = _unset_written_as(type(obj), f, _field_default(f, None), key_path)
                if written is not _OMIT:
                    out[f.name] = written
                continue
            out[f.name] = _toml_value(value, key_path)
        return out
    if isinstance(obj, Mapping):
        return {k: _toml_value(v, _join(path, k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_toml_value(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, enum.Enum):
        return _toml_value(obj.value, path)
    return obj


_POSITION = re.compile(r"at line (\d+), column (\d+)")


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML file at ``path`` as a dict. A missing or unreadable file, or invalid TOML, raises
    :class:`ConfigError` naming the file (and the line and column of a syntax error)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"config file '{name}' not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file '{name}': {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"config file '{name}' is not valid UTF-8 text (line {line})") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _POSITION.search(msg)
        if m:
            line = int(m.group(1))
        else:  # "at end of document"
            line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
        src = text.splitlines()[line - 1].strip() if text.splitlines() else ""
        shown = f"\n  line {line}: {src}" if src else ""
        raise ConfigError(f"invalid TOML in config file '{name}', line {line}: {msg}{shown}") from exc


# --------------------------------------------------------------------------------------------------------
# --set items, merging, building


def _parse_value(text: str) -> Any:
    stripped = text.strip()
    if stripped.lower() in _NONE_WORDS:
        return None
    try:
        parsed = tomllib.loads(f"v = {stripped}")
    except tomllib.TOMLDecodeError:
        return stripped
    if set(parsed) != {"v"} or isinstance(parsed["v"], (datetime.date, datetime.time)):
        return stripped  # not one value (a newline in it), or a date: take the text as it is
    return parsed["v"]


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["train.lr=0.01", "source_domains=['noisy','shuffled']", "eps=none"]`` as a nested dict.

    A value is read as a TOML value where it parses as one (``0.01``, ``true``, ``[1, 2]``, ``'x'``), else
    taken as a plain string; ``none``/``null`` (any case) is ``None``. Dotted keys make nested tables; a
    later item wins over an earlier one.
    """
    if isinstance(items, (str, bytes)):
        raise TypeError("parse_set expects a list of 'key=value' strings, not a single string")
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"--set expects key=value, got {_show(item)} ({type(item).__name__})")
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (e.g. train.lr=0.01), got {item!r}")
        parts = [p.strip() for p in key.split(".")]
        if any(not p for p in parts):
            raise ConfigError(f"--set expects key=value with a dotted key such as train.lr, got {item!r}")
        nested: Any = _parse_value(value)
        for part in reversed(parts):
            nested = {part: nested}
        out = merge(out, nested)
    return out


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``override`` (a new dict; neither is modified): where both hold a dict under a
    key, the two are merged recursively; otherwise the value of ``override`` wins."""
    for name, arg in (("base", base), ("override", override)):
        if not isinstance(arg, Mapping):
            raise TypeError(f"merge expects mappings, got {type(arg).__name__} for {name}")
    out: dict[str, Any] = {k: (merge({}, v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = merge({}, v) if isinstance(v, Mapping) else v
    return out


def build_config(
    cls: type[T],
    *,
    defaults: Mapping[str, Any] | None = None,
    file: str | os.PathLike[str] | None = None,
    sets: Sequence[str] = (),
) -> T:
    """Build ``cls`` from ``defaults`` (a partial dict, e.g. a named variant), then the TOML ``file``, then
    the ``--set`` items (each layer overrides the one before), checked by :func:`config_from_dict`."""
    _check_config_class(cls)
    data: dict[str, Any] = merge({}, defaults or {})
    if file is not None:
        data = merge(data, load_toml(file))
    data = merge(data, parse_set(sets))
    return config_from_dict(cls, data)
