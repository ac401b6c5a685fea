"""Inputs every script refuses before it computes (or names) a run: one ``error:`` line, exit 2, no run folder."""
from __future__ import annotations

import functools
import json
import typing
from dataclasses import dataclass, fields

import pytest
import torch

from common import cli
from common import config as C
from common import sparsity as S
from common.errors import UserError
from common.store import Run, execute
from tests.conftest import one_error_line, run_main
from tests.test_cli import SCRIPTS


def refused(script: str, argv, tmp_path, capsys) -> str:
    """Run ``script`` in this process: it must exit with 2 and one ``error: ...`` line, leave the run store empty,
    and the line is returned (without ``error: ``)."""
    runs = tmp_path / "runs"
    assert cli.main(script, [*map(str, argv), "--runs-dir", str(runs), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert not runs.exists() or not any(runs.rglob("*")), list(runs.rglob("*"))
    return lines[0].removeprefix("error: ")


# ------------------------------------------------------------------------------------ --exclude that leaves nothing
@pytest.mark.parametrize("script,argv", [
    ("gmp.prune", []), ("bip.prune", []), ("bip.magnitude", []), ("bip.retrain", []), ("seqattn.prune", []),
    ("seqattn.oneshot", []), ("bip.prune", ["--model", "cnn", "--structure", "filter"])])
def test_an_exclude_that_leaves_no_layer_is_refused(script, argv, tmp_path, capsys):
    line = refused(script, [*argv, "--exclude", "*"], tmp_path, capsys)
    assert line.startswith("--exclude * leaves no layer to prune (the model's Conv2d/Linear layers: "), line
    assert line.endswith("); exclude fewer layers"), line


def test_gmp_excluding_every_layer_by_name_is_refused(tmp_path, capsys):
    line = refused("gmp.prune", ["--exclude", "first,last,3,7"], tmp_path, capsys)
    assert line == "--exclude first,last,3,7 leaves no layer to prune (the model's Conv2d/Linear layers: 0, 3, 7, " \
                   "12); exclude fewer layers"


# ------------------------------------------------------------------------------------ a target that leaves no weight
def test_keeps_some_is_exact_per_layer_and_global():
    counts = {"big.weight": 1000, "small.weight": 7}
    for s in (1 - 1 / 7, 0.9):  # the smallest layer keeps one weight: accepted
        S.check_keeps_some(counts, s, "layer", "sparsity")
    with pytest.raises(UserError, match=r"^--sparsity 0.93 leaves layer small.weight \(7 weights\) with none under a "
                                        r"per-layer ratio; lower the sparsity \(1 - 1/7 keeps one\)"):
        S.check_keeps_some(counts, 0.93, "layer", "sparsity")  # round(6.51) = 7 of 7 pruned
    S.check_keeps_some(counts, 1 - 2 / 1007, "global", "sparsity")  # 2 kept: one for each layer is possible
    with pytest.raises(UserError, match=r"^--sparsity 0.999 keeps 1 of the 1007 weights under a global ranking, "
                                        r"fewer than one for each of the 2 pruned layers \(the smallest: small.weight, "
                                        r"7 weights\)"):
        S.check_keeps_some(counts, 0.999, "global", "sparsity")
    with pytest.raises(UserError, match="small.weight"):  # per layer at 0.999: big keeps 1, small none
        S.check_keeps_some(counts, 0.999, "layer", "sparsity")


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_the_largest_accepted_sparsity_keeps_a_weight_in_every_layer(scope):
    """At the boundary the check accepts, the top-k itself leaves every layer a weight (layer) or one weight per
    layer overall (global); one step beyond, the check refuses."""
    torch.manual_seed(0)
    scores = {"a": torch.rand(3, 5), "b": torch.rand(40), "c": torch.rand(2, 2)}
    counts = {n: t.numel() for n, t in scores.items()}
    grid = [i / 10000 for i in range(10000)]
    accepted = []
    for s in grid:
        try:
            S.check_keeps_some(counts, s, scope, "sparsity")
            accepted.append(s)
        except UserError:
            pass
    top = max(accepted)
    assert all(s <= top for s in accepted)  # refusal is monotone: every sparsity above the largest accepted one
    masks = S.topk_masks(scores, top, scope, ties="exact")
    kept = {n: int(m.sum()) for n, m in masks.items()}
    if scope == "layer":
        assert min(kept.values()) == 1, kept
    else:
        assert sum(kept.values()) == len(scores), kept
    beyond = S.topk_masks(scores, grid[grid.index(top) + 1], scope, ties="exact")
    assert min(int(m.sum()) for m in beyond.values()) == 0  # what the check refuses does empty a layer


@pytest.mark.parametrize("script,argv,start", [
    ("gmp.prune", ["--target-sparsity", "0.9999999"],
     "--target-sparsity 0.9999999 leaves layer 3.weight (18432 weights) with none under a per-layer ratio"),
    ("gmp.prune", ["--target-sparsity", "0.9999999", "--scope", "global"],
     "--target-sparsity 0.9999999 keeps 0 of the 92160 weights under a global ranking, fewer than one for each of "
     "the 2 pruned layers (the smallest: 3.weight, 18432 weights)"),
    ("bip.prune", ["--target-sparsity", "0.9999999"],
     "--target-sparsity 0.9999999 keeps 0 of the 50200 weights under a global ranking"),
    ("bip.magnitude", ["--target-sparsity", "0.99999", "--method", "omp"],
     "--target-sparsity 0.99999 keeps 1 of the 50200 weights under a global ranking, fewer than one for each of the "
     "3 pruned layers (the smallest: 5.weight, 1000 weights)"),
    ("bip.magnitude", ["--target-sparsity", "0.9995", "--scope", "layer", "--method", "omp"],
     "--target-sparsity 0.9995 leaves layer 5.weight (1000 weights) with none"),
    ("seqattn.prune", ["--sparsity", "0.9999"],
     "--sparsity 0.9999 leaves layer 1.weight (1200 blocks) with none under a per-layer ratio"),
    ("seqattn.prune", ["--sparsity", "0.9999", "--scope", "global"],
     "--sparsity 0.9999 keeps 0 of the 3075 blocks under a global ranking"),
    ("seqattn.oneshot", ["--sparsities", "0.5,0.9999"],
     "--sparsities 0.9999 leaves layer 1.weight (1200 blocks) with none under a per-layer ratio"),
])
def test_a_target_that_leaves_a_layer_no_weight_is_refused(script, argv, start, tmp_path, capsys):
    line = refused(script, argv, tmp_path, capsys)
    assert line.startswith(start), line


# ------------------------------------------------------------------------------------ posttrain's penalty
@pytest.mark.parametrize("flag,value", [("--penalty", "-1"), ("--penalty-growth", "-0.02"), ("--penalty", "nan")])
def test_a_negative_penalty_is_refused_up_front(flag, value, tmp_path, capsys):
    line = refused("posttrain.prune", [flag, value], tmp_path, capsys)
    assert line == f"{flag} {float(value)} must be >= 0 (phase 1's sparsity penalty grows from --penalty by " \
                   f"--penalty-growth per epoch), e.g. the default 0.02"


# ------------------------------------------------------------------------------------ --data-dir
def test_a_data_dir_that_is_a_file_is_refused(tmp_path, capsys):
    from common import data as D

    afile = tmp_path / "datasets.txt"
    afile.write_text("not a folder\n")
    expected = f"--data-dir {afile} is a file, not a folder; give the folder that holds the datasets (or one to " \
               f"download them into)"
    assert refused("gmp.prune", ["--dataset", "fashionmnist", "--data-dir", afile], tmp_path, capsys) == expected
    assert refused("common.pretrain", ["--data-dir", afile], tmp_path, capsys) == expected
    with pytest.raises(UserError, match="is a file, not a folder"):  # not Debian's copy in its place
        D.load_dataset("fashionmnist", root=str(afile))
    with pytest.raises(UserError, match="is a file, not a folder"):
        D.fashion_folder(afile)
    assert D.data_root(tmp_path / "missing") == tmp_path / "missing"  # a folder to come is fine


# ------------------------------------------------------------------------------------ --snapshot-epochs
def test_snapshot_epochs_beyond_the_run_are_refused(tmp_path, capsys):
    from common import pretrain

    line = refused("common.pretrain", ["--train.epochs", "3", "--snapshot-epochs", "1,4,-1"], tmp_path, capsys)
    assert line == "--snapshot-epochs 4,-1 is outside the run, which trains 3 epochs (--train.epochs); give epochs " \
                   "in 0..3"
    pretrain.validate(C.build(pretrain.Config, **{"train.epochs": 3, "snapshot_epochs": (0, 3)}))  # 3: model.pt


# ------------------------------------------------------------------------------------ argparse's names of values
@pytest.mark.parametrize("script,flag,value,expected", [
    ("seqattn.prune", "--phases", "0.1,x", "invalid float list value: '0.1,x'"),
    ("gmp.prune", "--finetune-weight-decay", "abc", "invalid float or none value: 'abc'"),
    ("bip.magnitude", "--rewind-epoch", "2.5", "invalid int or none value: '2.5'"),
])
def test_a_value_of_the_wrong_type_names_its_type(script, flag, value, expected, tmp_path):
    proc = run_main(script, flag, value, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2 and not (tmp_path / "runs").exists()
    assert one_error_line(proc) == f"error: argument {flag}: {expected} (see python -m {script} --help)"


def test_no_converter_is_a_lambda():
    for module in SCRIPTS:
        for cls in (module.Config,):
            def walk(c):
                hints = typing.get_type_hints(c)
                for f in fields(c):
                    tp = hints[f.name]
                    if hasattr(tp, "__dataclass_fields__"):
                        yield from walk(tp)
                    else:
                        yield f.name, C._converter(tp)
            for name, conv in walk(cls):
                assert "<" not in getattr(conv, "__name__", "<none>"), (module.SCRIPT, name)


# ------------------------------------------------------------------------------------ --export-block
def test_export_block_messages_name_the_format_they_mean(tmp_path, capsys):
    line = refused("gmp.prune", ["--export-format", "csr", "--export-block", "4"], tmp_path, capsys)
    assert line == "--export-block 4: give a positive block size with the bsr format only; --export-format csr " \
                   "takes none (leave --export-block out)"
    line = refused("gmp.prune", ["--export-format", "bsr", "--export-block", "-1"], tmp_path, capsys)
    assert line == "--export-block -1: give a positive block size with the bsr format (0: the run's own block size " \
                   "or 8)"


# ------------------------------------------------------------------------------------ flags a method ignores
IGNORED = [  # (script, the method's flags, a flag it ignores, a value other than the default)
    ("gmp.prune", ["--method", "oneshot"], "--initial-sparsity", "0.1"),
    ("gmp.prune", ["--method", "oneshot"], "--update-every", "0.5"),
    ("gmp.prune", ["--method", "oneshot"], "--update-unit", "steps"),
    ("bip.prune", ["--method", "hydra"], "--ig", "none"),
    ("bip.prune", ["--method", "hydra"], "--gamma", "100.0"),
    ("bip.prune", ["--method", "hydra"], "--lower-steps", "2"),
    ("bip.prune", ["--method", "bip"], "--finetune-epochs", "3"),
    ("bip.prune", ["--model", "cnn", "--structure", "filter"], "--scope", "layer"),
    ("bip.retrain", ["--method", "bip"], "--finetune-epochs", "3"),
    ("bip.magnitude", ["--method", "omp"], "--rate", "0.5"),
    ("bip.magnitude", ["--method", "omp"], "--max-rounds", "5"),
    ("seqattn.prune", ["--method", "acdc"], "--c", "2.0"),
    ("seqattn.prune", ["--method", "acdc"], "--sparsify-share", "0.25"),
    ("seqattn.prune", ["--method", "sapp", "--sparsification", "false"], "--mask-every", "4"),
    ("seqattn.prune", ["--method", "magnitude"], "--sparsification", "false"),
    ("seqattn.prune", ["--method", "magnitude"], "--short-dense-steps", "3"),
    ("seqattn.prune", ["--method", "powerprop"], "--temperature", "2.0"),
    ("seqattn.prune", ["--method", "acdc"], "--attention", "unnormalized"),
    ("seqattn.prune", ["--method", "acdc"], "--clip", "none"),
    ("seqattn.prune", ["--method", "acdc"], "--logit-weight-decay", "0.001"),
    ("seqattn.prune", ["--method", "sapp"], "--alpha", "3.0"),
    ("seqattn.oneshot", ["--score", "magnitude"], "--temperature", "2.0"),
    ("posttrain.prune", ["--method", "l1"], "--samples", "64"),
    ("posttrain.prune", ["--method", "l1"], "--sample-seed", "3"),
    ("posttrain.prune", ["--method", "none"], "--lr", "0.01"),
    ("posttrain.prune", ["--method", "none"], "--phase2-epochs", "3"),
    ("posttrain.prune", ["--method", "none"], "--batch-size", "8"),
    ("posttrain.prune", ["--method", "holistic"], "--phase1-epochs", "3"),
    ("posttrain.prune", ["--method", "layerwise"], "--penalty", "0.1"),
    ("posttrain.prune", ["--method", "holistic"], "--penalty-growth", "0.1"),
    ("posttrain.prune", ["--method", "holistic"], "--balanced", "false"),
    ("posttrain.prune", ["--method", "ours"], "--retrain.epochs", "5"),
]
# the input options of --dataset imagefolder, in every script's config (common.pretrain.Start)
IGNORED += [(module.SCRIPT, ["--dataset", "digits"], flag, value) for module in SCRIPTS
            if "image_size" in {f.name for f in fields(module.Config)}
            for flag, value in (("--image-size", "32"), ("--image-mean", "0.5"), ("--image-std", "0.25"))]


@pytest.mark.parametrize("script,method,flag,value", IGNORED, ids=[f"{s} {f}" for s, _, f, _ in IGNORED])
def test_a_flag_the_method_ignores_is_refused_unless_it_keeps_the_default(script, method, flag, value, tmp_path,
                                                                            capsys):
    import importlib

    line = refused(script, [*method, flag, value], tmp_path, capsys)
    selector = f"{method[-2]} {method[-1]}"
    assert line.startswith(f"{flag} {value} does not apply to ") and selector in line.split(" (it is used")[0], line
    assert line.endswith("only); leave it out: it would change the run's hash, not what it computes"), line
    module = importlib.import_module(script)
    default = C.parse_args(module.Config, method)  # the default value itself is no second hash: accepted
    name = flag[2:].replace("-", "_")
    shown = C._shown(functools.reduce(getattr, name.split("."), default))  # (a tuple as the command line writes it)
    assert C.parse_args(module.Config, [*method, flag, shown]) == default


def test_every_method_dependent_field_names_a_choice_of_its_config():
    """Each ``when`` names a field of the same config with allowed values (or a bool) and values it can hold; and the
    survey's table covers each such field of each script at least once."""
    covered = {(s, f) for s, _, f, _ in IGNORED}
    for module in SCRIPTS:
        names = {f.name: f for f in fields(module.Config)}
        for f in fields(module.Config):
            when = f.metadata.get("when")
            if not when:
                continue
            for selector, values in when.items():
                allowed = names[selector].metadata.get("choices", (True, False))
                assert set(values) <= set(allowed), (module.SCRIPT, f.name, selector)
            flag = "--" + f.name.replace("_", "-")
            assert any(s == module.SCRIPT and (g == flag or g.startswith(flag + ".")) for s, g in covered) or \
                module.SCRIPT == "bip.retrain", (module.SCRIPT, flag)


def test_a_preset_value_of_an_ignored_field_is_its_default():
    """bip.prune's presets set Hydra's fine-tuning for both methods: BiP with the preset keeps it; a flag that changes
    it under BiP is refused."""
    from bip import prune

    preset = ["--preset", "cifar10-resnet18"]
    cfg = C.parse_args(prune.Config, [*preset, "--method", "bip"], presets=prune.PRESETS)
    assert cfg.finetune_epochs == 100
    assert C.parse_args(prune.Config, [*preset, "--finetune-epochs", "100"], presets=prune.PRESETS) == cfg
    with pytest.raises(UserError, match=r"^--finetune-epochs 50 does not apply to --method bip \(it is used with "
                                        r"--method hydra only\)"):
        C.parse_args(prune.Config, [*preset, "--finetune-epochs", "50"], presets=prune.PRESETS)
    assert C.parse_args(prune.Config, ["--method", "hydra", "--finetune-epochs", "50"]).finetune_epochs == 50


def test_when_is_not_part_of_the_hash():
    @dataclass
    class Plain:
        method: str = C.opt("a", "m", choices=("a", "b"))
        knob: float = C.opt(1.0, "used by b")

    @dataclass
    class Marked:
        method: str = C.opt("a", "m", choices=("a", "b"))
        knob: float = C.opt(1.0, "used by b", when={"method": ("b",)})

    assert C.canonical_json(Plain()) == C.canonical_json(Marked())
    assert C.canonical_json(Plain(knob=2.0)) == C.canonical_json(Marked(knob=2.0))
    assert "(--method b only)" in fields(Marked)[1].metadata["help"]


# ------------------------------------------------------------------------------------ seqattn's sparsity
def test_seqattn_reports_the_sparsity_of_what_it_pruned_and_of_the_model(tmp_path, one_thread):
    from seqattn import prune

    cfg = C.build(prune.Config, method="magnitude", block=4, sparsity=0.9, epochs=2, progress="off",
                  runs_dir=str(tmp_path / "runs"), device="cpu")
    result = execute(prune, cfg)
    layers = json.loads((Run(prune.SCRIPT, cfg).dir / "result.json").read_text())["layers"]
    pruned = [x for x in layers if x["block_sparsified"]]
    everything = sum(x["numel"] for x in layers)
    assert [x["layer"] for x in pruned] == ["1.weight", "3.weight"] and len(layers) == 3  # the classifier: dense
    assert result["sparsity"] == pytest.approx(1 - sum(x["nonzero"] for x in pruned) / sum(x["numel"] for x in pruned))
    assert result["sparsity"] == pytest.approx(0.9, abs=1e-3) == result["candidate_sparsity"]
    assert result["model_sparsity"] == pytest.approx(1 - sum(x["nonzero"] for x in layers) / everything)
    assert result["model_sparsity"] < 0.89  # the dense classifier counts in the model's, not in the pruned layers'
