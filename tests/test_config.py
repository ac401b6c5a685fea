import json
import typing
from dataclasses import dataclass, fields, is_dataclass

import pytest

from common import config as C
from common.errors import UserError
from tests.conftest import one_error_line, run_main


@dataclass
class Inner:
    lr: float = C.opt(0.1, "learning rate")
    milestones: tuple[float, ...] = C.opt((), "epochs")


@dataclass
class Outer:
    name: str = C.opt("a", "a name", choices=("a", "b"))
    flag: bool = C.opt(False, "a switch")
    inner: Inner = C.opt(Inner(), "nested")
    device: str = C.opt("cpu", "where", hash=False)


def test_parse_nested_tuple_bool_and_presets():
    cfg = C.parse_args(Outer, ["--inner.lr", "0.5", "--inner.milestones", "3,7.5", "--flag", "true"])
    assert cfg == Outer(flag=True, inner=Inner(lr=0.5, milestones=(3.0, 7.5)))
    cfg = C.parse_args(Outer, ["--preset", "p", "--inner.lr", "2"], presets={"p": {"name": "b", "inner.lr": 1.0}})
    assert cfg.name == "b" and cfg.inner.lr == 2.0


def test_roundtrip_and_hash_ignores_execution_fields():
    cfg = Outer(inner=Inner(milestones=(1.0,)))
    assert C.from_dict(Outer, C.to_dict(cfg)) == cfg
    assert C.canonical_json(cfg) == C.canonical_json(C.replace(cfg, device="cuda"))
    assert C.canonical_json(cfg) != C.canonical_json(C.replace(cfg, **{"inner.lr": 0.2}))


def test_bad_choice_and_unknown_field():
    with pytest.raises(UserError, match="'c' is not one of: a, b"):
        C.parse_args(Outer, ["--name", "c"])
    with pytest.raises(UserError):
        C.replace(Outer(), nope=1)


def test_every_option_is_documented():
    proc = run_main("gmp.prune", "--help")
    assert proc.returncode == 0
    for flag in ("--method", "--target-sparsity", "--stabilize-epochs", "--prune-epochs", "--update-every",
                 "--update-unit", "--scope", "--exclude", "--finetune-weight-decay", "--prune-lr.schedule",
                 "--pretrain.epochs", "--optim.momentum", "--device", "--runs-dir", "--preset"):
        assert flag in proc.stdout, flag
    assert "(default:" in proc.stdout


def test_unknown_option_is_one_line(tmp_path):
    proc = run_main("gmp.prune", "--no-such-option", "3", "--runs-dir", tmp_path)
    assert proc.returncode == 2
    assert "unrecognized arguments: --no-such-option" in one_error_line(proc)
    assert not (tmp_path / "gmp.prune").exists()


# ---------------------------------------------------------------------------------------------------- lr > 0
@pytest.mark.parametrize("script,option,value", [
    ("bip.prune", "--lower.lr", "-0.1"), ("bip.retrain", "--retrain.lr", "0"), ("bip.magnitude", "--train.lr", "-1"),
    ("gmp.prune", "--prune-lr.lr", "0"), ("gmp.prune", "--pretrain.lr", "-0.05"), ("seqattn.prune", "--lr.lr", "0"),
    ("seqattn.oneshot", "--finetune.lr", "-0.01"), ("posttrain.prune", "--lr", "-0.003"),
    ("posttrain.prune", "--retrain.lr", "nan"), ("common.pretrain", "--train.lr", "0")])
def test_learning_rates_must_be_positive(script, option, value, tmp_path, capsys):
    from common import cli

    assert cli.main(script, [option, value, "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {option} {float(value)} must be > 0\n"
    assert not any(tmp_path.iterdir())


def test_every_learning_rate_field_is_declared_positive():
    from tests.test_cli import SCRIPTS

    def lr_fields(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if is_dataclass(hints[f.name]):
                yield from lr_fields(hints[f.name], prefix + f.name + ".")
            elif f.name == "lr":
                yield prefix + f.name, f.metadata.get("positive", False)

    found = {(m.SCRIPT, name): positive for m in SCRIPTS for name, positive in lr_fields(m.Config)}
    assert ("bip.prune", "lower.lr") in found and ("posttrain.prune", "lr") in found
    assert all(found.values()), [k for k, v in found.items() if not v]


def test_positive_flag_in_build_and_presets():
    @dataclass
    class Cfg:
        rate: float = C.opt(1.0, "a rate", positive=True)
        inner: Inner = C.opt(Inner(), "nested")

    assert C.build(Cfg, rate=0.5).rate == 0.5
    with pytest.raises(UserError, match=r"^--rate -2.0 must be > 0$"):
        C.build(Cfg, {"bad": {"rate": -2.0}}, "bad")


# ---------------------------------------------------------------------------------------------------- files
@dataclass
class WithFile:
    weights: str = C.opt("", "a file whose bytes determine the result", content=True)
    inner: Inner = C.opt(Inner(), "nested")


def test_a_content_field_is_hashed_by_the_file_bytes(tmp_path):
    from common.store import config_hash

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"first")
    first = config_hash(WithFile(weights=str(a)))
    a.write_bytes(b"other")  # same path, new content: another run
    second = config_hash(WithFile(weights=str(a)))
    b.write_bytes(b"other")  # same content, another path: the same run
    assert first != second == config_hash(WithFile(weights=str(b)))
    assert C.to_dict(WithFile(weights=str(b)), hashed_only=True)["weights"] == str(b)  # config.json keeps the path
    assert '"weights":""' in C.canonical_json(WithFile())  # no file: as before


def test_posttrain_checkpoint_is_keyed_by_content(tmp_path):
    from posttrain import prune

    from common.store import Run

    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights v1")
    cfg = C.parse_args(prune.Config, ["--checkpoint", str(ckpt), "--runs-dir", str(tmp_path)])
    before = Run(prune.SCRIPT, cfg).hash
    ckpt.write_bytes(b"weights v2")
    assert Run(prune.SCRIPT, cfg).hash != before
    default = prune.Config()  # no --checkpoint: the run's identity is the one it always was
    assert C.canonical_json(default) == json.dumps(C.to_dict(default, True), sort_keys=True, separators=(",", ":"))


def test_missing_content_file_is_one_line(tmp_path):
    missing = tmp_path / "nope.pt"
    proc = run_main("posttrain.prune", "--checkpoint", missing, "--runs-dir", tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc) == (f"error: --dense-checkpoint {missing}: no such file; give the path of an "
                                    "existing file")  # --checkpoint is another name of --dense-checkpoint
    with pytest.raises(UserError, match=r"^--weights .* is a folder; give the path of a file$"):
        C.canonical_json(WithFile(weights=str(tmp_path)))


def test_a_field_added_unless_default_keeps_earlier_hashes():
    """A field marked hash="unless-default" leaves the identity of every config at its default unchanged (runs stored
    before it existed keep their hash) and enters it once set to another value."""
    @dataclass
    class Before:
        lr: float = C.opt(0.1, "lr")

    @dataclass
    class After:
        lr: float = C.opt(0.1, "lr")
        accumulate: int = C.opt(1, "steps per update", hash="unless-default")
        names: tuple[str, ...] = C.opt(("a",), "names", hash="unless-default")

    assert C.canonical_json(After()) == C.canonical_json(Before())
    assert C.canonical_json(After(accumulate=2)) != C.canonical_json(Before())
    assert C.canonical_json(After(names=("b",))) != C.canonical_json(Before())
    assert C.to_dict(After())["accumulate"] == 1  # config.json still shows it


# ------------------------------------------------------------------------------------------------ --config FILE
PRESETS = {"p": {"name": "b", "inner.lr": 1.0, "flag": True}}


def test_config_file_round_trips_print_config_between_preset_and_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        C.parse_args(Outer, ["--inner.milestones", "3,7.5", "--device", "gpu", "--print-config"])
    printed = tmp_path / "printed.json"
    printed.write_text(capsys.readouterr().out)
    assert C.parse_args(Outer, ["--config", str(printed)]) == Outer(inner=Inner(milestones=(3.0, 7.5)), device="gpu")
    partial = tmp_path / "partial.json"  # defaults < --preset < --config < flags
    partial.write_text(json.dumps({"inner": {"lr": 0.5}, "flag": False}))
    cfg = C.parse_args(Outer, ["--preset", "p", "--config", str(partial)], presets=PRESETS)
    assert (cfg.name, cfg.flag, cfg.inner.lr) == ("b", False, 0.5)
    cfg = C.parse_args(Outer, ["--inner.lr", "2", "--config", str(partial), "--preset", "p"], presets=PRESETS)
    assert (cfg.name, cfg.flag, cfg.inner.lr) == ("b", False, 2.0)


def test_a_runs_config_json_gives_its_hash_and_flags_override_it(tmp_path):
    from common.store import Run, config_doc
    from gmp import prune

    cfg = C.build(prune.Config, None, None, update_every=93, target_sparsity=0.95, seed=3)  # an int, as a profile's
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_doc(prune.SCRIPT, cfg)))
    again = C.parse_args(prune.Config, ["--config", str(path), "--runs-dir", str(tmp_path)])
    assert Run(prune.SCRIPT, again).hash == Run(prune.SCRIPT, cfg).hash  # the integer stays one: the same hash
    assert again.runs_dir == str(tmp_path) and type(again.update_every) is int
    other = C.parse_args(prune.Config, ["--config", str(path), "--seed", "4"])
    assert Run(prune.SCRIPT, other).hash == Run(prune.SCRIPT, C.replace(cfg, seed=4)).hash


@pytest.mark.parametrize("document, message", [
    ({"seed": 1, "no_such_setting": 3}, "unknown setting 'no_such_setting' (no option --no-such-setting; see --help)"),
    ({"target_sparsity": "0.9"}, "'target_sparsity' is \"0.9\", not a number"),
    ({"script": "bip.prune", "config": {"seed": 1}}, "is the config of a bip.prune run, not of gmp.prune; run it with "
                                                     "python -m bip.prune --config ..."),
])
def test_a_bad_config_file_is_one_line_and_stores_nothing(tmp_path, document, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    proc = run_main("gmp.prune", "--config", path, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert line.startswith(f"error: --config {path}") and message in line, line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, message", [
    ("{'name': 'b'}", "is not JSON (Expecting property name enclosed in double quotes"),
    ("[1, 2]", "is not a JSON object of settings; give what --print-config prints or a run's config.json"),
    ('{"inner": 0.5}', ": 'inner' is 0.5, not an object of its settings"),
    ('{"inner": {"milestones": [1, "x"]}}', ": 'inner.milestones' is [1, \"x\"], not a list of numbers"),
    ('{"flag": 1}', ": 'flag' is 1, not a true/false"),
    ('{"name": "c"}', ": --name 'c' is not one of: a, b"),
    (None, ": no such file; give the path of an existing file"),
])
def test_config_file_refusals(tmp_path, text, message):
    path = tmp_path / "config.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UserError) as exc:
        C.parse_args(Outer, ["--config", str(path)])
    assert str(exc.value).startswith(f"--config {path}") and message in str(exc.value)
