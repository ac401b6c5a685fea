"""Config is data: one dataclass per script, its command line generated from the fields.

Nested dataclasses become dotted flags (``--pretrain.lr 0.1``). A field's help text and allowed values live in
its metadata (``field(default=..., metadata={"help": ..., "choices": [...]})``). Fields marked
``metadata={"hash": False}`` describe *how* a run executes (device, data folder, workers) rather than *what* it
computes; they are left out of the run's identity (see ``common.store``). Fields added after runs were stored are
marked ``hash="unless-default"``: they enter the identity only when set to another value, so every run stored before
they existed keeps its hash. Fields marked ``positive`` (learning rates)
must be > 0. Fields marked ``content`` name a file whose bytes determine the result: the run's identity holds the
file's sha256, not its path (the path stays in ``config.json`` for people to read). Fields marked ``when`` apply to
some methods only (``when={"method": ("gmp",)}``); the command line refuses a value other than the default for a
method that ignores them (:func:`check_applies`): it would only give the same computation a second run hash.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import typing
from dataclasses import field, fields, is_dataclass

from common.errors import UserError


def opt(default, help: str, choices=None, hash: bool = True,  # noqa: A002 - mirrors argparse's names
        positive: bool = False, content: bool = False, when: dict | None = None):
    """A config field with its help text (and optional allowed values).

    ``hash``: True (part of the run's identity), False (how it runs, not what it computes) or "unless-default"
    (part of the identity only when it differs from ``default``: a field added without changing existing hashes).

    ``positive``: the value must be > 0 (checked by :func:`build`). ``content``: a file path (empty: none) whose
    file's bytes, not its name, are part of the run's identity (see :func:`canonical_json`). ``when``: {field of the
    same config: the values under which this field is used}, e.g. ``{"method": ("gmp",)}``; where one is not met the
    method ignores the field (see :func:`check_applies`).
    """
    meta = {"help": help, "hash": hash}
    if choices is not None:
        meta["choices"] = list(choices)
    if positive:
        meta["positive"] = True
    if content:
        meta["content"] = True
    if when:
        meta["when"] = {name: tuple(values) for name, values in when.items()}
        meta["help"] += f" ({_used_with(meta['when'])} only)"
    if isinstance(default, (list, dict)) or is_dataclass(default):
        return field(default_factory=lambda: _copy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _default(f):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _copy(value):
    return dataclasses.replace(value) if is_dataclass(value) else type(value)(value)


def to_dict(cfg, hashed_only: bool = False) -> dict:
    """The config as plain JSON data; with ``hashed_only`` the execution-only fields are dropped."""
    return _data(cfg, hashed_only, digests=False)


def _flag(name: str) -> str:
    """The command-line option of a (dotted) field name."""
    return "--" + name.replace("_", "-")


def _data(cfg, hashed_only: bool, digests: bool, prefix: str = "") -> dict:
    out = {}
    for f in fields(cfg):
        if hashed_only and not f.metadata.get("hash", True):
            continue
        v = getattr(cfg, f.name)
        if hashed_only and f.metadata.get("hash") == "unless-default" and v == _default(f):
            continue
        if is_dataclass(v):
            out[f.name] = _data(v, hashed_only, digests, prefix + f.name + ".")
        elif digests and f.metadata.get("content") and v:
            out[f.name] = "sha256:" + file_digest(v, _flag(prefix + f.name))
        else:
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def file_digest(path: str, option: str) -> str:
    """The sha256 (hex) of the bytes of the file ``path`` given to ``option``."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise UserError(f"{option} {path}: no such file; give the path of an existing file") from None
    except IsADirectoryError:
        raise UserError(f"{option} {path} is a folder; give the path of a file") from None
    except PermissionError:
        raise UserError(f"{option} {path} cannot be read (permission denied); make it readable or copy it") from None
    return digest.hexdigest()


def from_dict(cls, data: dict):
    """Rebuild a config from ``to_dict`` output (unknown keys are an error: they mean a different code version)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    names = {f.name for f in fields(cls)}
    for key, value in data.items():
        if key not in names:
            raise UserError(f"config key '{key}' is not a field of {cls.__name__}; was it written by another version?")
        tp = hints[key]
        if is_dataclass(tp):
            kwargs[key] = from_dict(tp, value)
        elif _origin(tp) is tuple:
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def canonical_json(cfg) -> str:
    """The run's identity: the hashed fields, with each ``content`` file given by its sha256 instead of its path."""
    return json.dumps(_data(cfg, hashed_only=True, digests=True), sort_keys=True, separators=(",", ":"))


def replace(cfg, **changes):
    """``dataclasses.replace`` that also accepts dotted keys for nested configs: replace(c, **{"pretrain.lr": 0.1})."""
    direct, nested = {}, {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        direct[head] = replace(direct.get(head, getattr(cfg, head)), **sub)
    try:
        return dataclasses.replace(cfg, **direct)
    except TypeError as exc:
        raise UserError(f"{type(cfg).__name__}: {exc}") from None


# ----------------------------------------------------------------------------------------------------------- CLI
def _origin(tp):
    return typing.get_origin(tp)


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got '{text}'")


def _converter(tp):
    """A function str -> value for a field type (tuples are comma-separated). Its ``__name__`` is what argparse
    calls the expected value in an error ("invalid float list value: '0.1,x'")."""
    if tp is bool:
        return _parse_bool
    if _origin(tp) is tuple:
        inner = typing.get_args(tp)[0]

        def values(s):
            return tuple(inner(x) for x in s.split(",") if x.strip() != "")
        values.__name__ = f"{inner.__name__} list"
        return values
    if _origin(tp) is typing.Union:  # Optional[X]
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        conv = _converter(inner)

        def value_or_none(s):
            return None if s.lower() in ("none", "") else conv(s)
        value_or_none.__name__ = f"{conv.__name__} or none"
        return value_or_none
    return tp


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (``error: ...``) and exit 2, like every other user mistake here."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _add_fields(parser, cls, defaults, prefix="", group=None):
    """One option per leaf field of ``cls``; the defaults shown are those of the instance ``defaults`` (a nested
    config's are the ones its outer field builds, e.g. ``Level(lr=0.01)``, not the nested class's own)."""
    hints = typing.get_type_hints(cls)
    group = group or parser
    for f in fields(cls):
        tp = hints[f.name]
        name = prefix + f.name
        default = getattr(defaults, f.name)
        if is_dataclass(tp):  # a nested config: its own section of --help
            _add_fields(parser, tp, default, name + ".", parser.add_argument_group(name, f.metadata.get("help")))
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            help_text += f" {{{', '.join(map(str, choices))}}}"
        group.add_argument(
            _flag(name), dest=name, type=_converter(tp), default=argparse.SUPPRESS,
            metavar=tp.__name__.upper() if isinstance(tp, type) else "VALUE",
            help=f"{help_text} (default: {shown})",
            **({"nargs": "?", "const": True} if tp is bool else {}),  # a bare --flag means true
        )


def _check_values(cfg, prefix=""):
    """The checks declared in the fields' metadata: allowed values (``choices``), ``positive``."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if is_dataclass(v):
            _check_values(v, prefix + f.name + ".")
        elif "choices" in f.metadata and v not in f.metadata["choices"]:
            allowed = ", ".join(map(str, f.metadata["choices"]))
            raise UserError(f"{_flag(prefix + f.name)} '{v}' is not one of: {allowed}")
        elif f.metadata.get("positive") and not (isinstance(v, (int, float)) and v > 0):
            raise UserError(f"{_flag(prefix + f.name)} {v} must be > 0")


def _shown(value) -> str:
    """A value as it is written on the command line."""
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _used_with(when: dict) -> str:
    return " and ".join(f"{_flag(name)} {'/'.join(map(_shown, values))}" for name, values in when.items())


def _first_difference(value, base, name: str) -> tuple[str, object]:
    """(dotted name, value) of the first leaf where ``value`` differs from ``base`` (nested configs: their leaves)."""
    if is_dataclass(value):
        for f in fields(value):
            a, b = getattr(value, f.name), getattr(base, f.name)
            if a != b:
                return _first_difference(a, b, f"{name}.{f.name}")
    return name, value


def check_applies(cfg, baseline) -> None:
    """Refuse a field the config's method ignores (its ``when`` not met) whose value differs from ``baseline`` (the
    class defaults with the preset applied): the same computation would be stored under a second run hash."""
    for f in fields(cfg):
        when = f.metadata.get("when")
        unmet = [name for name, values in (when or {}).items() if getattr(cfg, name) not in values]
        if not unmet or getattr(cfg, f.name) == getattr(baseline, f.name):
            continue
        name, value = _first_difference(getattr(cfg, f.name), getattr(baseline, f.name), f.name)
        given = " ".join(f"{_flag(n)} {_shown(getattr(cfg, n))}" for n in unmet)
        raise UserError(f"{_flag(name)} {_shown(value)} does not apply to {given} (it is used with "
                        f"{_used_with(when)} only); leave it out: it would change the run's hash, not what it computes")


def parse_args(cls, argv=None, description: str = "", presets: dict | None = None, prog: str | None = None):
    """Parse a command line into an instance of ``cls``.

    ``presets`` maps a name to a dict of (dotted) overrides; ``--preset NAME`` applies one before the flags. A flag
    that the chosen method ignores is refused unless it keeps the default (:func:`check_applies`).
    """
    parser = make_parser(cls, description, presets, prog)
    ns = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    preset = ns.pop("preset", None)
    show = ns.pop("print_config")
    cfg = build(cls, presets, preset, **ns)
    check_applies(cfg, build(cls, presets, preset))
    if show:  # like --help: print, then end the command without computing anything
        print(json.dumps(to_dict(cfg), indent=1, sort_keys=True), flush=True)
        parser.exit(0)
    return cfg


def make_parser(cls, description: str = "", presets: dict | None = None, prog: str | None = None):
    """The command-line parser of config class ``cls`` (see :func:`parse_args`)."""
    parser = OneLineParser(prog=prog, description=description, usage="%(prog)s [--preset NAME] [--option VALUE ...]",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    if presets:
        parser.add_argument("--preset", choices=sorted(presets), default=None,
                            help="start from a named table of settings (e.g. a paper setup); flags override it")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (class defaults, then --preset, then the flags) as JSON and "
                             "exit without computing")
    _add_fields(parser, cls, cls())
    return parser


def build(cls, presets: dict | None = None, preset: str | None = None, **overrides):
    """A config from the class defaults, an optional named preset, then (dotted) overrides: a row of a profile table."""
    cfg = cls()
    if preset is not None:
        if not presets or preset not in presets:
            raise UserError(f"unknown preset '{preset}' for {cls.__module__}; choose one of: {', '.join(presets or ())}")
        cfg = replace(cfg, **presets[preset])
    cfg = replace(cfg, **overrides)
    _check_values(cfg)
    return cfg
