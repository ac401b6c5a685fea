from dataclasses import dataclass, field

import pytest

from common import config as C
from common.errors import UserError
from tests.conftest import one_error_line, run_cli


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
    proc = run_cli("gmp.prune", "--help")
    assert proc.returncode == 0
    for flag in ("--method", "--target-sparsity", "--stabilize-epochs", "--prune-epochs", "--update-every",
                 "--update-unit", "--scope", "--exclude", "--finetune-weight-decay", "--prune-lr.schedule",
                 "--pretrain.epochs", "--optim.momentum", "--device", "--runs-dir", "--preset"):
        assert flag in proc.stdout, flag
    assert "(default:" in proc.stdout


def test_unknown_option_is_one_line(tmp_path):
    proc = run_cli("gmp.prune", "--no-such-option", "3", "--runs-dir", tmp_path)
    assert proc.returncode == 2
    assert "unrecognized arguments: --no-such-option" in one_error_line(proc)
    assert not (tmp_path / "gmp.prune").exists()
