"""Config is data: one dataclass per script, its command line generated from the fields.

Nested dataclasses become dotted flags (``--pretrain.lr 0.1``). A field's help text and allowed values live in
its metadata (``field(default=..., metadata={"help": ..., "choices": [...]})``). Fields marked
``metadata={"hash": False}`` describe *how* a run executes (device, data folder, workers) rather than *what* it
computes; they are left out of the run's identity (see ``common.store``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from dataclasses import MISSING, field, fields, is_dataclass

from common.errors import UserError


def opt(default, help: str, choices=None, hash: bool = True):  # noqa: A002 - mirrors argparse's names
    """A config field with its help text (and optional allowed values)."""
    meta = {"help": help, "hash": hash}
    if choices is not None:
        meta["choices"] = list(choices)
    if isinstance(default, (list, dict)) or is_dataclass(default):
        return field(default_factory=lambda: _copy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _copy(value):
    return dataclasses.replace(value) if is_dataclass(value) else type(value)(value)


def to_dict(cfg, hashed_only: bool = False) -> dict:
    """The config as plain JSON data; with ``hashed_only`` the execution-only fields are dropped."""
    out = {}
    for f in fields(cfg):
        if hashed_only and not f.metadata.get("hash", True):
            continue
        v = getattr(cfg, f.name)
        out[f.name] = to_dict(v, hashed_only) if is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
    return out


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
    return json.dumps(to_dict(cfg, hashed_only=True), sort_keys=True, separators=(",", ":"))


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
    """A function str -> value for a field type (tuples are comma-separated)."""
    if tp is bool:
        return _parse_bool
    if _origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        return lambda s: tuple(inner(x) for x in s.split(",") if x.strip() != "")
    if _origin(tp) is typing.Union:  # Optional[X]
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        conv = _converter(inner)
        return lambda s: None if s.lower() in ("none", "") else conv(s)
    return tp


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (``error: ...``) and exit 2, like every other user mistake here."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _add_fields(parser, cls, prefix="", group=None):
    hints = typing.get_type_hints(cls)
    group = group or parser
    for f in fields(cls):
        tp = hints[f.name]
        name = prefix + f.name
        if is_dataclass(tp):  # a nested config: its own section of --help
            _add_fields(parser, tp, name + ".", parser.add_argument_group(name, f.metadata.get("help")))
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            help_text += f" {{{', '.join(map(str, choices))}}}"
        group.add_argument(
            "--" + name.replace("_", "-"), dest=name, type=_converter(tp), default=argparse.SUPPRESS,
            metavar=tp.__name__.upper() if isinstance(tp, type) else "VALUE",
            help=f"{help_text} (default: {shown})",
            **({"nargs": "?", "const": True} if tp is bool else {}),  # a bare --flag means true
        )


def _check_choices(cfg, prefix=""):
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if is_dataclass(v):
            _check_choices(v, prefix + f.name + ".")
        elif "choices" in f.metadata and v not in f.metadata["choices"]:
            allowed = ", ".join(map(str, f.metadata["choices"]))
            raise UserError(f"--{(prefix + f.name).replace('_', '-')} '{v}' is not one of: {allowed}")


def parse_args(cls, argv=None, description: str = "", presets: dict | None = None, prog: str | None = None):
    """Parse a command line into an instance of ``cls``.

    ``presets`` maps a name to a dict of (dotted) overrides; ``--preset NAME`` applies one before the flags.
    """
    parser = OneLineParser(prog=prog, description=description, usage="%(prog)s [--preset NAME] [--option VALUE ...]",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if presets:
        parser.add_argument("--preset", choices=sorted(presets), default=None,
                            help="start from a named table of settings (e.g. a paper setup); flags override it")
    _add_fields(parser, cls)
    ns = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    preset = ns.pop("preset", None)
    return build(cls, presets, preset, **ns)


def build(cls, presets: dict | None = None, preset: str | None = None, **overrides):
    """A config from the class defaults, an optional named preset, then (dotted) overrides: a row of a profile table."""
    cfg = cls()
    if preset is not None:
        if not presets or preset not in presets:
            raise UserError(f"unknown preset '{preset}' for {cls.__module__}; choose one of: {', '.join(presets or ())}")
        cfg = replace(cfg, **presets[preset])
    cfg = replace(cfg, **overrides)
    _check_choices(cfg)
    return cfg
