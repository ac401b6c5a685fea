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
``--config FILE`` reads the settings back from what ``--print-config`` prints or from a run's ``config.json``
(:func:`read_settings`), and :func:`flags` writes a config as the flags that give it: a run's config round-trips.
"""
from __future__ import annotations

import argparse
import contextlib
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
    file's bytes, not its name, are part of the run's identity (see :func:`canonical_json`); or a function
    ``(config, value) -> identity`` for a value that stands for something other than one file (a dataset read from
    a folder: its list of files). ``when``: {field of the
    same config: the values under which this field is used}, e.g. ``{"method": ("gmp",)}``; where one is not met the
    method ignores the field (see :func:`check_applies`).
    """
    meta = {"help": help, "hash": hash}
    if choices is not None:
        meta["choices"] = list(choices)
    if positive:
        meta["positive"] = True
    if content:
        meta["content"] = content
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
            how = f.metadata["content"]
            out[f.name] = how(cfg, v) if callable(how) else "sha256:" + file_digest(v, _flag(prefix + f.name))
        else:
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


@contextlib.contextmanager
def _readable(path: str, option: str):
    """Reading the file ``path`` given to ``option``: a missing, folder or unreadable one ends in one line naming it."""
    try:
        yield
    except FileNotFoundError:
        raise UserError(f"{option} {path}: no such file; give the path of an existing file") from None
    except IsADirectoryError:
        raise UserError(f"{option} {path} is a folder; give the path of a file") from None
    except PermissionError:
        raise UserError(f"{option} {path} cannot be read (permission denied); make it readable or copy it") from None


def file_digest(path: str, option: str) -> str:
    """The sha256 (hex) of the bytes of the file ``path`` given to ``option``."""
    digest = hashlib.sha256()
    with _readable(path, option), open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
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
    class defaults with the preset and the ``--config`` file applied): the same computation would be stored under a
    second run hash."""
    for f in fields(cfg):
        when = f.metadata.get("when")
        unmet = [name for name, values in (when or {}).items() if getattr(cfg, name) not in values]
        if not unmet or getattr(cfg, f.name) == getattr(baseline, f.name):
            continue
        name, value = _first_difference(getattr(cfg, f.name), getattr(baseline, f.name), f.name)
        given = " ".join(f"{_flag(n)} {_shown(getattr(cfg, n))}" for n in unmet)
        raise UserError(f"{_flag(name)} {_shown(value)} does not apply to {given} (it is used with "
                        f"{_used_with(when)} only); leave it out: it would change the run's hash, not what it computes")


# ----------------------------------------------------------------------------------------------- --config FILE
def _expected(tp) -> str:
    """What a JSON value of a field of type ``tp`` must be, in words."""
    if _origin(tp) is typing.Union:
        return _expected([a for a in typing.get_args(tp) if a is not type(None)][0]) + " or null"
    if _origin(tp) is tuple:
        return f"a list of {_expected(typing.get_args(tp)[0]).split(' ', 1)[1]}s"
    return {bool: "a true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, f"a {tp}")


def _typed(tp, value):
    """``value`` (read from JSON) as a value of field type ``tp``; raises ``TypeError`` when it is not one. An integer
    where a float is expected stays an integer: a run's config.json holds the values its hash was computed from (a
    profile's row may give a float field an integer, which hashes as one)."""
    if _origin(tp) is typing.Union:
        return None if value is None else _typed([a for a in typing.get_args(tp) if a is not type(None)][0], value)
    if _origin(tp) is tuple and isinstance(value, list):
        return tuple(_typed(typing.get_args(tp)[0], v) for v in value)
    allowed = {float: (int, float)}.get(tp, tp)
    if not isinstance(value, allowed) or (isinstance(value, bool) and tp is not bool):
        raise TypeError(tp)
    return value


def _settings(cls, data: dict, where: str, prefix: str = "") -> dict:
    hints, names = typing.get_type_hints(cls), {f.name for f in fields(cls)}
    out = {}
    for key, value in data.items():
        name = prefix + key
        if key not in names:
            raise UserError(f"{where}: unknown setting '{name}' (no option {_flag(name)}; see --help): written for "
                            "another script, or by another version?")
        tp = hints[key]
        if is_dataclass(tp):
            if not isinstance(value, dict):
                raise UserError(f"{where}: '{name}' is {json.dumps(value)[:60]}, not an object of its settings")
            out.update(_settings(tp, value, where, name + "."))
            continue
        try:
            out[name] = _typed(tp, value)
        except TypeError:
            raise UserError(f"{where}: '{name}' is {json.dumps(value)[:60]}, not {_expected(tp)}") from None
    return out


def settings(cls, data, where: str, script: str | None = None) -> dict:
    """The (dotted) settings of config class ``cls`` that the JSON document ``data`` holds: what ``--print-config``
    prints (its fields), or a run's ``config.json`` (``{"script": ..., "config": {its fields}}``, the config of a run
    of ``script``). A setting it leaves out keeps its default. An unknown setting, a value of the wrong type or the
    config.json of another script is a one-line ``UserError`` (``where`` names the document)."""
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "script" in data:  # a run's config.json
        if script is not None and data["script"] != script:
            raise UserError(f"{where} is the config of a {data['script']} run, not of {script}; run it with "
                            f"python -m {data['script']} --config ...")
        data = data["config"]
    if not isinstance(data, dict):
        raise UserError(f"{where} is not a JSON object of settings; give what --print-config prints or a run's "
                        "config.json")
    return _settings(cls, data, where)


def read_settings(cls, path: str, script: str | None = None) -> dict:
    """:func:`settings` of the JSON file ``path`` (``--config FILE``)."""
    with _readable(path, "--config"), open(path, "rb") as fh:
        raw = fh.read()
    try:
        data = json.loads(raw)
    except ValueError as exc:  # (bytes that are not UTF-8 too)
        raise UserError(f"--config {path} is not JSON ({exc}); give what --print-config prints or a run's "
                        "config.json") from None
    return settings(cls, data, f"--config {path}", script)


def _script_of(cls) -> str | None:
    """The ``SCRIPT`` of the module that defines config class ``cls`` (None when it is not a script's)."""
    return getattr(sys.modules.get(cls.__module__), "SCRIPT", None)


def flags(cfg, baseline, prefix: str = "") -> list[str]:
    """The command-line flags that turn config ``baseline`` into ``cfg``: ``--option value`` for every leaf field
    where they differ, its value as it is written on the command line (the reverse of :func:`parse_args`)."""
    out = []
    for f in fields(cfg):
        value, base = getattr(cfg, f.name), getattr(baseline, f.name)
        if value == base:
            continue
        if is_dataclass(value):
            out += flags(value, base, prefix + f.name + ".")
        else:
            out += [_flag(prefix + f.name), _shown(value)]
    return out


def parse_args(cls, argv=None, description: str = "", presets: dict | None = None, prog: str | None = None,
               script: str | None = None):
    """Parse a command line into an instance of ``cls``.

    The settings apply in this order, each overriding the ones before: the class defaults; ``--preset NAME`` (a dict
    of (dotted) overrides in ``presets``); ``--config FILE`` (:func:`read_settings`: a file is more specific than a
    named setup, so it overrides the preset; the config.json of a run of another script than ``script``, by default
    the ``SCRIPT`` of ``cls``'s module, is refused); the flags. A flag that the chosen method ignores is refused
    unless it keeps the value the defaults, preset and file give it (:func:`check_applies`).
    """
    parser = make_parser(cls, description, presets, prog)
    ns = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    preset = ns.pop("preset", None)
    show = ns.pop("print_config")
    path = ns.pop("config")
    from_file = read_settings(cls, path, script or _script_of(cls)) if path is not None else {}
    try:
        baseline = build(cls, presets, preset, **from_file)
    except UserError as exc:  # a value the options refuse (not one of the choices, not > 0)
        raise UserError(f"--config {path}: {exc}") from None
    cfg = build(cls, presets, preset, **{**from_file, **ns})
    check_applies(cfg, baseline)
    if show:  # like --help: print, then end the command without computing anything
        print(json.dumps(to_dict(cfg), indent=1, sort_keys=True), flush=True)
        parser.exit(0)
    return cfg


def make_parser(cls, description: str = "", presets: dict | None = None, prog: str | None = None):
    """The command-line parser of config class ``cls`` (see :func:`parse_args`)."""
    parser = OneLineParser(prog=prog, description=description,
                           usage="%(prog)s [--preset NAME] [--config FILE] [--option VALUE ...]",
                           epilog="A relative path (--runs-dir, --data-dir, --config, ...) is taken from the current "
                                  "directory.", formatter_class=argparse.RawDescriptionHelpFormatter)
    if presets:
        parser.add_argument("--preset", choices=sorted(presets), default=None,
                            help="start from a named table of settings (e.g. a paper setup); --config and flags "
                                 "override it")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="start from the settings in FILE: the JSON --print-config prints, or a run's config.json "
                             "(runs/<script>/<hash>/config.json); they override the defaults and --preset, flags "
                             "override them, a setting it leaves out keeps its default (or the preset's)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (class defaults, then --preset, then --config, then the "
                             "flags) as JSON and exit without computing")
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
