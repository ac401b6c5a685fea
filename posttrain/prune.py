"""Post-training structured pruning without retraining (two-phase reconstruction), and its baselines.

    python -m posttrain.prune --ratio 0.5 --samples 128                 # ours, digits CNN (tiny profile)
    python -m posttrain.prune --model resnet8 --method layerwise        # a baseline, on the narrow residual net
    python -m posttrain.prune --dense-checkpoint my_model.pt --model cnn   # start from a given state_dict
    python -m posttrain.prune --preset cifar10-resnet56 --data-dir /datasets

Algorithm (ours), from a trained dense model theta and n unlabeled training samples:
  1. grouping + importance: Torch-Pruning's dependency groups, group L2 importance (mean-normalized), one global
     channel ratio, the classifier excluded  ->  the channels to remove (``posttrain/groups.py``);
  2. phase 1: reconstruct every conv/linear/BN output of the teacher (theta, eval mode) with the per-layer
     normalized holistic loss while a growing sparsity penalty drives the to-be-removed slices to ~0;
  3. phase 2: remove the channels physically, then recalibrate the kept outputs against the teacher with balanced
     per-layer learning rates lr/N ... lr/1 (``posttrain/reconstruct.py``).
Steps 1-3 are ``posttrain.reconstruct.calibrate``, for any trained model and a batch of unlabeled samples.
Baselines (--method): none (remove, no reconstruction), layerwise (each layer fitted to the teacher on its own,
AdaPrune-like), holistic (phase 2 only, one learning rate, no penalty: gAP-like), l1 (Li et al.'s L1-norm filter
ranking, the same ratio in every layer, then full retraining with labels for --retrain.epochs).
One process, one GPU: the calibration is not data-parallel (and the CPU latency timing needs the CPUs to itself), so a
job of several processes (torchrun, a Slurm job of several tasks) is refused before anything is computed.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from common import config as C
from common import distributed
from common.data import dataset_info, load_dataset
from common.errors import UserError
from common.export import structured_state
from common.metrics import count_params, final_report, flops, paired_latency_ms
from common.models import MODEL_HELP, build_model, check_model
from common.pretrain import DenseStart, dense_runs, given_start, load_dense, start_model
from common.store import Run
from common.train import (Progress, Recipe, evaluate, lr_at, make_optimizer, prepare_model, resolve_device,
                          resumable_epochs, train_epoch)
from posttrain import groups as G
from posttrain import reconstruct as R

SCRIPT = "posttrain.prune"
# Why this script runs in one process on one GPU: it refuses more (validate), and slurm.resources gives its jobs one task
ONE_PROCESS = "its calibration is not data-parallel, and its CPU latency timing needs the CPUs to itself"
METHODS = ("ours", "none", "layerwise", "holistic", "l1")
# Which methods use which fields: the calibration samples (all but l1), phase 2's reconstruction (all but none and
# l1), phase 1 and the balanced learning rates (ours), the retraining with labels (l1)
CALIBRATED = {"method": ("ours", "none", "layerwise", "holistic")}
RECONSTRUCTED = {"method": ("ours", "layerwise", "holistic")}
OURS = {"method": ("ours",)}


@dataclass
class Config(DenseStart):
    method: str = C.opt("ours", "ours (penalty + balanced two-phase reconstruction), none, layerwise (AdaPrune-like), "
                                "holistic (gAP-like), l1 (L1-norm + retraining with labels)", choices=METHODS)
    model: str = C.opt("cnn", MODEL_HELP)
    # every stored run's identity holds this field (""): it stays, as another name of --dense-checkpoint
    checkpoint: str = C.opt("", "the same as --dense-checkpoint (an older name of it)", content=True)
    ratio: float = C.opt(0.5, "fraction of all prunable channels to remove (global), in [0, 1)")
    ignore: tuple[str, ...] = C.opt((), "layer-name patterns (fnmatch) whose output channels are never removed, "
                                        "besides the classifier's (option-A ResNets: conv1,layers.*.conv2)")
    samples: int = C.opt(128, "number of unlabeled calibration samples drawn from the training set",
                         when=CALIBRATED)
    sample_seed: int = C.opt(0, "seed of the calibration draw (without replacement, no augmentation)",
                             when=CALIBRATED)
    batch_size: int = C.opt(32, "calibration batch size", when=RECONSTRUCTED)
    lr: float = C.opt(3e-3, "Adam learning rate of both phases (phase 2: of the last layer when balanced)",
                      positive=True, when=RECONSTRUCTED)
    phase1_epochs: int = C.opt(10, "phase 1 epochs (growing sparsity penalty); 0 skips it", when=OURS)
    phase2_epochs: int = C.opt(10, "phase 2 epochs (recalibration after removal)", when=RECONSTRUCTED)
    penalty: float = C.opt(0.02, "lambda_0: sparsity penalty coefficient in phase 1's first epoch, >= 0", when=OURS)
    penalty_growth: float = C.opt(0.02, "delta: added to the penalty coefficient every phase 1 epoch, >= 0",
                                  when=OURS)
    balanced: bool = C.opt(True, "phase 2 per-layer learning rates lr/N ... lr/1 (false: one lr for every layer)",
                           when=OURS)
    retrain: Recipe = C.opt(Recipe(epochs=100, lr=0.01), "l1 baseline: retraining with labels on the full training set",
                            when={"method": ("l1",)})
    latency_batch: int = C.opt(64, "batch size of the CPU latency measurement")

    def __post_init__(self):
        """``--checkpoint FILE`` is ``--dense-checkpoint FILE``: the file is moved there, so both give the same run."""
        if self.checkpoint:
            if self.dense_checkpoint not in ("", self.checkpoint):
                raise UserError(f"--checkpoint {self.checkpoint} and --dense-checkpoint {self.dense_checkpoint} name "
                                f"two files; give one (--checkpoint is an older name of --dense-checkpoint)")
            self.dense_checkpoint, self.checkpoint = self.checkpoint, ""


PRESETS = {
    # The paper's setups (its Tables 1-2; figures/reference/README.md): CIFAR ResNet-56 / ResNet-50 / VGG-19 at
    # channel ratio 0.5 (VGG-19 on CIFAR-100: 0.4), 512 samples, 20 + 10 epochs, Adam 1e-3; the dense models use the
    # 200-epoch CIFAR recipe (no official checkpoints exist).
    # resnet56 has option-A (zero-padding) shortcuts, which Torch-Pruning cannot follow: its residual widths (stem and
    # every block's conv2) stay and the blocks' inner channels are pruned. CIFAR ResNet-50: torchvision's bottlenecks
    # with the CIFAR stem (3x3 stride-1 first conv, no max-pool), as CIFAR ResNet-50s are; ImageNet: torchvision's.
    # Ours (the paper does not give them): the dense models' recipes (CIFAR: 200 epochs SGD 0.1 cosine, wd 1e-4;
    # ImageNet: the 90-epoch step recipe), the calibration batch size 64, the L1 baseline's 100 retraining epochs at
    # lr 0.01.
    "cifar10-resnet56": {"dataset": "cifar10", "model": "resnet56", "ignore": ("conv1", "layers.*.conv2"),
                         "ratio": 0.5, "samples": 512},
    "cifar10-resnet50": {"dataset": "cifar10", "model": "resnet50_cifar", "ratio": 0.5, "samples": 512},
    "cifar10-vgg19": {"dataset": "cifar10", "model": "vgg19_bn", "ratio": 0.5, "samples": 512},
    "cifar100-resnet56": {"dataset": "cifar100", "model": "resnet56", "ignore": ("conv1", "layers.*.conv2"),
                          "ratio": 0.5, "samples": 512},
    "cifar100-resnet50": {"dataset": "cifar100", "model": "resnet50_cifar", "ratio": 0.5, "samples": 512},
    "cifar100-vgg19": {"dataset": "cifar100", "model": "vgg19_bn", "ratio": 0.4, "samples": 512},
    # Fig. 5's CIFAR-100 ResNet-18 (the CIFAR variant with projection shortcuts).
    "cifar100-resnet18": {"dataset": "cifar100", "model": "resnet18", "ratio": 0.5, "samples": 512},
    # ImageNet ResNet-50 (torchvision), ratio 0.2 / 0.3, 2048 samples; dense model: the 90-epoch step recipe.
    "imagenet-resnet50": {"dataset": "imagenet", "model": "resnet50", "ratio": 0.3, "samples": 2048},
}
_PAPER_CALIBRATION = {"phase1_epochs": 20, "phase2_epochs": 10, "lr": 1e-3, "batch_size": 64}
_CIFAR_DENSE = {"pretrain.epochs": 200, "pretrain.lr": 0.1, "pretrain.weight_decay": 1e-4,
                "retrain.epochs": 100, "retrain.lr": 0.01, "retrain.weight_decay": 1e-4, **_PAPER_CALIBRATION}
for _name, _p in PRESETS.items():
    if _name.startswith("cifar"):
        _p.update(_CIFAR_DENSE)
PRESETS["imagenet-resnet50"].update({
    "pretrain.epochs": 90, "pretrain.lr": 0.1, "pretrain.weight_decay": 1e-4, "pretrain.batch_size": 256,
    "pretrain.schedule": "multistep", "pretrain.milestones": (30.0, 60.0, 80.0), "retrain.epochs": 100,
    "retrain.lr": 0.01, "retrain.weight_decay": 1e-4, "retrain.batch_size": 256, **_PAPER_CALIBRATION})


def validate(cfg: Config) -> None:
    info = dataset_info(cfg)
    check_model(cfg.model)
    if not 0.0 <= cfg.ratio < 1.0:
        raise UserError(f"--ratio {cfg.ratio} is outside [0, 1); give the fraction of channels to remove, e.g. 0.5")
    if cfg.samples < 1:
        raise UserError(f"--samples {cfg.samples} must be at least 1 (unlabeled calibration samples)")
    if min(cfg.phase1_epochs, cfg.phase2_epochs, cfg.retrain.epochs) < 0 or cfg.batch_size < 1 or not cfg.lr > 0:
        raise UserError("epochs must be >= 0, --batch-size >= 1 and --lr > 0")
    for name, value in (("penalty", cfg.penalty), ("penalty-growth", cfg.penalty_growth)):
        if not value >= 0:  # a negative penalty rewards the slices it should drive to zero: the loss runs away
            raise UserError(f"--{name} {value} must be >= 0 (phase 1's sparsity penalty grows from --penalty by "
                            f"--penalty-growth per epoch), e.g. the default 0.02")
    with torch.device("meta"):  # layer names only: no memory, no time
        G.ignored(build_model(cfg.model, info.num_classes, info.input_shape), cfg.ignore)  # every pattern matches
    distributed.require_one_process(SCRIPT, ONE_PROCESS)


def check_data(cfg: Config) -> None:
    """Before the dense model is trained (the store calls it before the dependencies): the training set holds the
    calibration samples, and Torch-Pruning can trace the architecture's channels."""
    info = dataset_info(cfg)
    data = load_dataset(cfg, root=cfg.data_dir, download=cfg.download, batch_size=cfg.retrain.batch_size,
                        seed=cfg.seed, val_size=cfg.val_size, workers=cfg.workers)
    x, _ = data.sample(cfg.samples, cfg.sample_seed)
    G.check_traceable(build_model(cfg.model, info.num_classes, info.input_shape), x[:1], cfg.ratio, cfg.ignore)


# ---------------------------------------------------------------------------------------------------- the model
def dense_model(cfg: Config, run, device, info):
    """The trained dense model theta: the user's own weights (``--dense-checkpoint``), or the store's dense run
    (trained once, shared: the dependency of ``run``)."""
    if given_start(cfg):
        return prepare_model(start_model(cfg, info), device), None
    return load_dense(cfg, run, device)


def costs(model, input_shape) -> dict:
    return {"params": count_params(model)["params"], "flops": flops(model, input_shape)["flops"]}


def channels(model) -> int:
    return sum(m.weight.shape[0] for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


# ---------------------------------------------------------------------------------------------------- methods
def calibrate(cfg: Config, teacher, student, x, run) -> R.Calibrated:
    """Steps 1-3 for the reconstruction methods: ``R.calibrate`` of ``student`` (a copy of ``teacher``, pruned in
    place) with this config's settings, logging to ``run``. The baselines switch its phases off: phase 1 is ours
    alone, none has no phase 2, layerwise and holistic recalibrate at one learning rate."""
    ours = cfg.method == "ours"
    return R.calibrate(student, x, cfg.ratio, teacher=teacher, ignore=cfg.ignore,
                       phase1_epochs=cfg.phase1_epochs if ours else 0,
                       phase2_epochs=cfg.phase2_epochs if cfg.method != "none" else 0, lr=cfg.lr,
                       batch_size=cfg.batch_size, penalty=cfg.penalty, penalty_growth=cfg.penalty_growth,
                       balanced=ours and cfg.balanced, layerwise=cfg.method == "layerwise", seed=cfg.sample_seed,
                       log=run.log)


def l1_retrain(cfg: Config, student, data, run) -> None:
    """Li et al. 2017: remove the smallest-L1 filters, the same ratio in every layer, then retrain with labels."""
    G.plan(student, data.sample(1, 0)[0], cfg.ratio, "l1", "layer", cfg.ignore).remove()
    optimizer = make_optimizer(student.parameters(), cfg.retrain, cfg.retrain.lr)
    steps = len(data.train)
    progress = Progress(cfg.progress)
    loop = resumable_epochs(run, cfg.retrain.epochs, {"model": student, "optimizer": optimizer})
    for epoch in loop:
        stats = train_epoch(student, data.train, epoch, optimizer, first_step=epoch * steps,
                            lr_of_step=lambda s: lr_at(cfg.retrain, s / steps, cfg.retrain.epochs), loop=loop)
        run.log(phase="retrain", epoch=epoch + 1, train_loss=stats["loss"], train_acc=stats["acc"])
        progress.line(f"[l1 retrain] epoch {epoch + 1}/{cfg.retrain.epochs} loss {stats['loss']:.4f}")


def dependencies(cfg: Config) -> list:
    """The runs the store executes before ``compute`` (``slurm.submit`` queues them ahead): the dense model, unless
    given."""
    return dense_runs(cfg)


def planned_epochs(cfg: Config, times) -> float:
    """Planned work of this run (its dependencies apart), in epochs of plain training of its dataset and model,
    with ``times`` a ``common.cost.Times`` table: what ``make plan-<name>`` and the Slurm requeue budget count."""
    if cfg.method == "l1":
        return cfg.retrain.epochs * times.step("l1")
    n = times.samples(cfg.dataset) - cfg.val_size
    return cfg.samples * (cfg.phase1_epochs + cfg.phase2_epochs) / n * times.step("calibration")


def compute(cfg: Config, run: Run) -> dict:
    device = resolve_device(cfg.device)
    info = dataset_info(cfg)
    data = load_dataset(cfg, root=cfg.data_dir, download=cfg.download, device=device,
                        batch_size=cfg.retrain.batch_size, seed=cfg.seed, val_size=cfg.val_size, workers=cfg.workers)
    x, _ = data.sample(cfg.samples, cfg.sample_seed)  # n distinct unlabeled samples; labels are never used
    teacher, _ = dense_model(cfg, run, device, info)
    teacher.eval().requires_grad_(False)
    dense_acc = evaluate(teacher, data.test)["acc"]
    student = copy.deepcopy(teacher).requires_grad_(True)
    torch.manual_seed(cfg.seed)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # one-time lazy imports stay out of the timings below

    start = time.perf_counter()
    updates, retrain_time = [], 0.0
    if cfg.method == "l1":
        l1_retrain(cfg, student, data, run)
        loss_after = None
    else:
        _, plan, targets, updates = calibrate(cfg, teacher, student, x, run)
        loss_after = R.calibration_loss(student, targets, x, plan.kept)
    method_time = time.perf_counter() - start
    if cfg.method == "l1":
        retrain_time = method_time

    dense_cost, pruned_cost = costs(teacher, info.input_shape), costs(student, info.input_shape)
    lat = paired_latency_ms({"dense": teacher, "pruned": student}, info.input_shape, cfg.latency_batch)
    lat_dense, lat_pruned = lat["dense"], lat["pruned"]
    # the pruned architecture as data (layer sizes + tensors, common.export.load_structured): never pickled modules
    torch.save(structured_state(student), run.dir / "model.pt")
    # costs: of the physically smaller model, beside the dense one's (params and flops, no sparsity-aware counts)
    return {**final_report(student, data, costs=False), "dense_test_acc": dense_acc,
            "params": pruned_cost["params"], "flops": pruned_cost["flops"],
            "dense_params": dense_cost["params"], "dense_flops": dense_cost["flops"],
            "RP": dense_cost["params"] / pruned_cost["params"], "RF": dense_cost["flops"] / pruned_cost["flops"],
            "channels": channels(student), "dense_channels": channels(teacher),
            "method_time": method_time, "retrain_time": retrain_time,
            "latency_dense_ms": lat_dense, "latency_pruned_ms": lat_pruned, "speedup": lat_dense / lat_pruned,
            "calib_loss": loss_after, "updates": updates}


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
