"""The command line every script shares: --help, --print-config, what goes to stdout/stderr, resumes, one-line errors."""
import errno
import importlib
import json
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import pytest

from common import cli
from common import config as C
from common import pretrain, store
from common.cli import Runtime
from common.errors import UserError
from common.store import Run, execute, read_log
from tests.conftest import ROOT, one_error_line, run_cli, run_main

PACKAGES = ("bip", "seqattn", "gmp", "posttrain")


def script_modules() -> list:
    """Every run script: a module of the method folders (and common.pretrain) with SCRIPT and Config."""
    names = ["common.pretrain"]
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).glob("*.py")):
            if re.search(r"^SCRIPT = ", path.read_text(), re.M):
                names.append(f"{pkg}.{path.stem}")
    modules = [importlib.import_module(n) for n in names]
    return [m for m in modules if hasattr(m, "Config") and hasattr(m, "SCRIPT")]


SCRIPTS = script_modules()


def test_every_script_is_found():
    assert {"bip.prune", "bip.retrain", "bip.magnitude", "bip.rewind", "seqattn.prune", "seqattn.oneshot",
            "gmp.prune", "posttrain.prune", "common.pretrain"} <= {m.SCRIPT for m in SCRIPTS}


def leaves(cls, value, prefix=""):
    """{dotted name: (type, value)} of every leaf field of config ``value`` (an instance of ``cls``)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        v = getattr(value, f.name)
        if is_dataclass(hints[f.name]):
            out.update(leaves(hints[f.name], v, prefix + f.name + "."))
        else:
            out[prefix + f.name] = (hints[f.name], v)
    return out


def printed_defaults(help_text: str) -> dict:
    """{option: the text after "(default: " of its help}, from argparse's --help layout: an option line, then
    (when the option is long) its help on the next, deeper indented line."""
    out, option, lines = {}, None, []
    for line in help_text.splitlines() + [""]:
        m = re.match(r"^  (--[\w.-]+)", line)
        if m or not re.match(r"^ {4,}\S", line):  # a new option, or the end of this one's help
            if option is not None:
                text = " ".join(lines)
                out[option] = text.rpartition("(default: ")[2].removesuffix(")") if "(default: " in text else None
            option, lines = (m.group(1), [line]) if m else (None, [])
        else:
            lines.append(line.strip())
    return out


@pytest.mark.parametrize("module", SCRIPTS, ids=lambda m: m.SCRIPT)
def test_help_shows_the_defaults_the_script_uses(module, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option's help
    text = C.make_parser(module.Config, presets=getattr(module, "PRESETS", None), prog=module.SCRIPT).format_help()
    shown = printed_defaults(text)
    expected = leaves(module.Config, module.Config())
    options = {"--" + name.replace("_", "-"): name for name in expected}
    assert set(shown) - {"--help", "--preset", "--config", "--print-config"} == set(options)
    for option, name in options.items():
        tp, value = expected[name]
        assert shown[option] is not None, option
        assert C._converter(tp)(shown[option]) == value, f"{module.SCRIPT} {option}: --help shows {shown[option]}"


def test_help_of_nested_recipes_in_a_subprocess():
    proc = run_cli("bip.prune", "--help", env={"COLUMNS": "400"})
    assert proc.returncode == 0
    lower = next(ln for ln in proc.stdout.splitlines() if ln.lstrip().startswith("--lower.lr "))
    upper = next(ln for ln in proc.stdout.splitlines() if ln.lstrip().startswith("--upper.lr "))
    assert lower.endswith("(default: 0.01)") and upper.endswith("(default: 0.1)")


def test_print_config_prints_the_resolved_config_and_computes_nothing(tmp_path):
    from bip import prune

    args = ["--preset", "cifar10-resnet18", "--lower.lr", "0.02", "--runs-dir", str(tmp_path)]
    proc = run_cli("bip.prune", *args, "--print-config")
    assert proc.returncode == 0, proc.stderr
    expected = C.build(prune.Config, prune.PRESETS, "cifar10-resnet18", **{"lower.lr": 0.02, "runs_dir": str(tmp_path)})
    assert json.loads(proc.stdout) == C.to_dict(expected)
    assert json.loads(proc.stdout)["lower"]["lr"] == 0.02
    assert list(tmp_path.iterdir()) == []  # no run directory, nothing computed


def test_print_config_in_process_exits_zero(capsys):
    with pytest.raises(SystemExit) as exc:
        C.parse_args(pretrain.Config, ["--train.lr", "0.3", "--print-config"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out)["train"]["lr"] == 0.3


# ------------------------------------------------------------------------------------------- stdout, stderr, resume
PRETRAIN = ["common.pretrain", "--model", "mlp", "--train.epochs", "3", "--progress", "lines"]


def test_stdout_is_the_result_alone_and_a_resume_is_said_and_logged(tmp_path, monkeypatch, one_thread):
    runs = tmp_path / "runs"
    cfg = C.parse_args(pretrain.Config, [*PRETRAIN[1:], "--checkpoint-epoch-minutes", "0", "--runs-dir", str(runs)])
    save = Run.save_checkpoint

    def save_then_stop(self, state):  # a run stopped right after its first epoch's checkpoint
        save(self, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(Run, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        execute(pretrain, cfg)
    monkeypatch.undo()
    run_dir = Run(pretrain.SCRIPT, cfg).dir

    proc = run_cli(*PRETRAIN, "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["hash"] == run_dir.name  # `| jq` reads exactly the result
    assert f"run: {run_dir}" in proc.stderr.splitlines()
    assert "resuming from epoch 1 of 3" in proc.stderr
    assert "[pretrain] epoch 3/3" in proc.stderr
    log = read_log(run_dir)
    resumes = [r for r in log if r.get("event") == "resume"]
    assert [r["from_epoch"] for r in resumes] == [1]
    assert [r["epoch"] for r in log if "epoch" in r] == [1, 2, 3]  # readers of the epoch records are unaffected
    assert log.index(resumes[0]) == 1

    again = run_cli(*PRETRAIN, "--runs-dir", runs)  # read from the store: the same one line, no resume
    assert again.stdout == proc.stdout and "resuming" not in again.stderr


def test_the_readme_template_script_runs(tmp_path, monkeypatch, capsys, one_thread):
    """The template of "Writing a script" (common/README.md), written to a package and run through cli.main."""
    text = (ROOT / "common" / "README.md").read_text()
    section = text[text.index("## Writing a script"):]
    template = section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "__init__.py").write_text("")
    (tmp_path / "mine" / "oneshot.py").write_text(template + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    runs = tmp_path / "runs"
    argv = ["--sparsity", "0.8", "--pretrain.epochs", "1", "--device", "cpu", "--runs-dir", str(runs)]
    assert cli.main("mine.oneshot", argv) == 0
    module = importlib.import_module("mine.oneshot")
    cfg = C.parse_args(module.Config, argv)
    result = json.loads(capsys.readouterr().out)
    assert result["hash"] == Run(module.SCRIPT, cfg).hash and abs(result["sparsity"] - 0.8) < 1e-3
    assert (Run(module.SCRIPT, cfg).dir / "model.pt").exists()
    assert all(Run(s, c).done for s, c in module.dependencies(cfg))
    assert set(module.PRESETS) and module.ONE_PROCESS and module.validate(cfg) is None


# ---------------------------------------------------------------------------------------------------- store hits
def test_a_store_hit_says_so_and_warns_when_other_code_computed_it(tmp_path, monkeypatch, capsys):
    _tiny_script(monkeypatch, lambda cfg, run: {"value": cfg.value})
    argv = ["--value", "3", "--runs-dir", str(tmp_path)]
    assert cli.main("tiny_script", argv) == 0
    computed = capsys.readouterr()
    run = Run("tiny.script", C.parse_args(Tiny, argv))
    assert "stored:" not in computed.err

    assert cli.main("tiny_script", argv) == 0
    hit = capsys.readouterr()
    assert hit.out == computed.out  # the same result line
    assert hit.err.splitlines()[1:] == [f"stored: {run.dir} is done; its result was read from the store, not computed"]

    result = json.loads((run.dir / "result.json").read_text())
    code = result["provenance"]["code"]
    result["provenance"]["code"] = {"content_hash": "0123456789abcdef", "git_commit": "f" * 40, "git_dirty": True}
    (run.dir / "result.json").write_text(json.dumps(result))
    assert cli.main("tiny_script", argv) == 0
    warning = capsys.readouterr().err.splitlines()[2]
    now = f"sources {code['content_hash']}, " + (f"commit {code['git_commit'][:10]}" if "git_commit" in code else
                                                 "no commit")
    assert warning.startswith(f"warning: {run.dir} was computed by other code (sources 0123456789abcdef, commit "
                              f"ffffffffff with local changes) than this checkout's ({now}"), warning
    assert warning.endswith(f"to compute it with this code: python -m common.runs rm {run.hash}, then run again")


# ---------------------------------------------------------------------------------------------------- errors
def test_unknown_device_is_one_line(tmp_path):
    proc = run_main("gmp.prune", "--device", "tpu", "--runs-dir", tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc) == "error: --device tpu is not a device this code runs on; use auto, cpu, cuda or " \
                                   "cuda:N (N: a GPU index)"
    assert not (tmp_path / "gmp.prune").exists()


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:", "cuda:x", "cpu:0", "CUDA", ""])
def test_device_forms_refused(name):
    from common.train import check_device

    with pytest.raises(UserError, match="use auto, cpu, cuda or cuda:N"):
        check_device(name)


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_forms_accepted(name):
    from common.train import check_device

    check_device(name)


@dataclass
class Tiny(Runtime):
    value: int = C.opt(1, "a number")


def _tiny_script(monkeypatch, compute):
    module = types.ModuleType("tiny_script")
    module.SCRIPT, module.Config, module.compute = "tiny.script", Tiny, compute
    monkeypatch.setitem(sys.modules, "tiny_script", module)
    return module


def _no_space(path=None):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([str(path)] if path else []))


def test_full_disk_while_checkpointing_is_one_line(tmp_path, monkeypatch, capsys):
    def compute(cfg, run):
        run.save_checkpoint({"epoch": 1})
        return {"value": cfg.value}

    def full(path, write, mode=None, previous=None):
        if Path(path).suffix == ".pt":
            raise _no_space(Path(path).parent / ".checkpoint.tmp.pt")
        return atomic_write(path, write, mode, previous)

    atomic_write = store.atomic_write
    _tiny_script(monkeypatch, compute)
    monkeypatch.setattr(store, "atomic_write", full)
    code = cli.main("tiny_script", ["--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    run_dir = (tmp_path / "tiny.script").resolve()
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: the disk at {next(run_dir.iterdir())} is full; free some space there")


def test_full_disk_without_a_file_name_names_the_run(tmp_path, monkeypatch, capsys):
    def compute(cfg, run):
        raise _no_space()  # e.g. a write through a file descriptor

    _tiny_script(monkeypatch, compute)
    code = cli.main("tiny_script", ["--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    run_dir = Run("tiny.script", Tiny(runs_dir=str(tmp_path))).dir
    assert code == 1
    assert err.splitlines()[-1].startswith(f"error: the disk at {run_dir} is full;"), err


def test_other_os_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def compute(cfg, run):
        raise OSError(errno.EIO, "I/O error")

    _tiny_script(monkeypatch, compute)
    with pytest.raises(OSError, match="I/O error"):
        cli.main("tiny_script", ["--runs-dir", str(tmp_path)])
