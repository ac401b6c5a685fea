"""Train a dense model: the starting point of every pruning method (python -m common.pretrain --help).

The trained weights are stored in the run directory as ``model.pt``; pruning scripts name this run's config as their
dependency (``dense_runs``), which the store executes before their ``compute``, and load it with ``load_dense``, so
a dense model is trained once and shared.
The weights of a few earlier epochs are kept too (``snapshots/epoch<k>.pt``, :func:`snapshot_epochs`): the rewinding
points ``bip.rewind`` reads, taken from this very training (a replay of it is exact on CPU only).

A pruning script may start from the user's own dense weights instead (``GivenStart``: ``--dense-checkpoint FILE``, or
``--dense-weights torchvision:<Weights>`` read from the local torch hub cache): then no dense run is trained or read,
and ``load_dense`` / ``start_model`` load the file into the config's model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from common import config as C
from common.cli import Runtime, runtime_of
from common.data import DATASETS, IMAGE_OPTIONS, dataset_identity, dataset_info, load_dataset
from common.errors import UserError
from common.models import MODEL_HELP, build_model, check_model
from common.metrics import final_report
from common.store import Run, atomic_write, save_state_dict
from common.train import (Progress, Recipe, ResumableEpochs, evaluate, lr_at, make_optimizer, prepare_model,
                          resolve_device, resumable_epochs, train_epoch)

SCRIPT = "common.pretrain"


# The help of ``val_size`` in a config that starts from a dense model (``DenseStart``, seqattn.prune).
VAL_SIZE_HELP = ("training samples held out, never trained on (here nor by the dense model): the same carve-out as a "
                 "BiP run with this --val-size, so both train on the same images")


FOLDER = {"dataset": ("imagefolder",)}  # the fields of a dataset read from the user's image folder


@dataclass
class Start(Runtime):
    """What every run trains: a dataset, a model, a seed (initialization and data order)."""

    dataset: str = C.opt("digits", "dataset (imagefolder: your own images, --data-dir/train/<class>/* and "
                                   "--data-dir/val/<class>/*, val being the test split; the run's identity holds the "
                                   "list of its files, not the folder's path)", choices=DATASETS,
                         content=dataset_identity)
    model: str = C.opt("mlp", MODEL_HELP)
    seed: int = C.opt(0, "random seed (initialization and data order)")
    image_size: int = C.opt(0, "side of the square images the model takes (training: random resized crops; "
                               "evaluation: resized to 8/7 of it, central crop); 0: computed, the median shorter side "
                               "of 256 training images drawn with a fixed seed", hash="unless-default", when=FOLDER)
    image_mean: tuple[float, ...] = C.opt((), "per-channel mean of the input pixels in [0, 1] (3 values, or 1 for "
                                              "all), subtracted from every input; empty: computed from the same 256 "
                                              "training images", hash="unless-default", when=FOLDER)
    image_std: tuple[float, ...] = C.opt((), "per-channel std of the input pixels in [0, 1], divides every input; "
                                             "empty: computed with --image-mean", hash="unless-default", when=FOLDER)


DENSE_CHECKPOINT_HELP = ("start from these weights instead of the store's dense model, which is then neither trained "
                         "nor read: a state_dict file, or a checkpoint holding one as its model, state_dict or "
                         "model_state_dict entry (torch.load(weights_only=True): tensors only, nothing executed); "
                         "the run's identity holds the file's sha256, not its path")
DENSE_WEIGHTS_HELP = ("start from torchvision's published weights, e.g. torchvision:ResNet50_Weights.IMAGENET1K_V2 "
                      "(with --model resnet50 or torchvision:resnet50 and the classes they were trained for), read "
                      "from the local torch hub cache (torch.hub.get_dir()/checkpoints), never downloaded")


@dataclass
class GivenStart(Start):
    """A config that may start from the user's own weights (``given_start``): a file, or torchvision's published
    weights. A script that trains from scratch starts its training there; one that prunes a dense model prunes them."""

    dense_checkpoint: str = C.opt("", DENSE_CHECKPOINT_HELP, content=True, hash="unless-default")
    dense_weights: str = C.opt("", DENSE_WEIGHTS_HELP, hash="unless-default")


@dataclass
class DenseStart(GivenStart):
    """A config that starts from the dense model of ``common.pretrain`` (``dense_config``): its dataset, model, seed,
    recipe ``pretrain`` and the training samples both hold out (``val_size``); or from the user's own dense weights
    (``GivenStart``), with which ``pretrain`` goes unused."""

    pretrain: Recipe = C.opt(Recipe(epochs=30, lr=0.05), "recipe of the dense model this run starts from")
    val_size: int = C.opt(0, VAL_SIZE_HELP)


@dataclass
class Config(Start):
    model: str = C.opt("cnn", MODEL_HELP)
    train: Recipe = C.opt(Recipe(epochs=30, lr=0.05), "the training recipe")
    val_size: int = C.opt(0, "training samples held out, never trained on (the validation split of the pruning "
                             "runs that start from this model: common.data.carve_val, the same positions for all)")
    snapshot_epochs: tuple[int, ...] = C.opt((), "keep the weights after these epochs too, besides those always kept "
                                                 "(common.pretrain.snapshot_epochs)", hash=False)


PRESETS = {
    # CIFAR-10/100 dense training of the BiP paper's configs (200 epochs, SGD 0.1 cosine, wd 1e-4, bs 128).
    "cifar-resnet": {"dataset": "cifar10", "model": "resnet20", "train.epochs": 200, "train.lr": 0.1,
                     "train.weight_decay": 1e-4, "train.batch_size": 128},
    # ImageNet ResNet-50, the standard 90-epoch step recipe (bs 256, lr 0.1, /10 at 30/60/80).
    "imagenet-resnet50": {"dataset": "imagenet", "model": "resnet50", "train.epochs": 90, "train.lr": 0.1,
                          "train.weight_decay": 1e-4, "train.batch_size": 256, "train.schedule": "multistep",
                          "train.milestones": (30.0, 60.0, 80.0)},
}


# The epochs whose weights every dense run keeps besides its last (for rewinding: bip.rewind): the initialization,
# the first epochs and the fractions of the training the BiP figures rewind to (rounded as figures.bip.fig_bip_rewind
# rounds them); --snapshot-epochs, and a dependent's rewind epoch (dense_config), add more. Execution-only: which
# snapshots a run keeps is not part of its identity, so a dense run finished before a new rewinding point was asked
# for lacks that one (bip.rewind then replays the training).
SNAPSHOT_EPOCHS = (0, 1, 2)
SNAPSHOT_FRACTIONS = (0.05, 0.1, 0.5, 0.75)


def snapshot_epochs(cfg: Config) -> list[int]:
    """The epochs < ``cfg.train.epochs`` whose weights the run keeps as ``snapshots/epoch<k>.pt`` (the last epoch's
    are ``model.pt``)."""
    n = cfg.train.epochs
    keep = {*SNAPSHOT_EPOCHS, *(int(round(f * n)) for f in SNAPSHOT_FRACTIONS), *cfg.snapshot_epochs}
    return sorted(k for k in keep if 0 <= k < n)


def validate(cfg: Config) -> None:
    dataset_info(cfg)
    check_model(cfg.model)
    beyond = [k for k in cfg.snapshot_epochs if not 0 <= k <= cfg.train.epochs]
    if beyond:
        raise UserError(f"--snapshot-epochs {','.join(map(str, beyond))} is outside the run, which trains "
                        f"{cfg.train.epochs} epochs (--train.epochs); give epochs in 0..{cfg.train.epochs}")


def snapshot_path(run_dir, epoch: int):
    """Where a dense run keeps its weights after ``epoch`` epochs (``model.pt`` for the last)."""
    return Path(run_dir) / "snapshots" / f"epoch{epoch}.pt"


def _save_weights(model, path) -> None:
    atomic_write(path, lambda tmp: save_state_dict(tmp, model))


def setup(cfg: Config, device: torch.device):
    """(data, model, optimizer) of ``cfg``'s training before its first epoch: seeded, the validation split held out."""
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg, root=cfg.data_dir, download=cfg.download, device=device,
                        batch_size=cfg.train.batch_size, seed=cfg.seed, val_size=cfg.val_size, workers=cfg.workers)
    model = prepare_model(build_model(cfg.model, data.info.num_classes, data.info.input_shape), device)
    return data, model, make_optimizer(model.parameters(), cfg.train, cfg.train.lr)


def train_epochs(cfg: Config, data, model, optimizer, epochs, progress: Progress | None = None):
    """Train the given ``epochs`` of ``cfg``'s recipe (the LR schedule over its full length); yields each epoch's
    index and training stats after it. ``epochs``: the run's ``resumable_epochs`` loop (``compute``: it also
    checkpoints within each epoch), or plain epoch indices (``bip.rewind``'s replay)."""
    steps = len(data.train)
    loop = epochs if isinstance(epochs, ResumableEpochs) else None
    for epoch in epochs:
        yield epoch, train_epoch(model, data.train, epoch, optimizer, first_step=epoch * steps,
                                 lr_of_step=lambda s: lr_at(cfg.train, s / steps, cfg.train.epochs),
                                 progress=progress, desc=f"pretrain {epoch + 1}/{cfg.train.epochs}", loop=loop)


def planned_epochs(cfg: Config, times) -> float:
    """Planned work of this run (its dependencies apart), in epochs of plain training of its dataset and model,
    with ``times`` a ``common.cost.Times`` table: what ``make plan-<name>`` and the Slurm requeue budget count."""
    return cfg.train.epochs * times.step("dense")


def compute(cfg: Config, run: Run) -> dict:
    data, model, optimizer = setup(cfg, resolve_device(cfg.device))
    progress = Progress(cfg.progress)
    keep = snapshot_epochs(cfg)
    if 0 in keep:  # the initialization (also on a resume: the state is restored by the loop, below)
        _save_weights(model, snapshot_path(run.dir, 0))
    loop = resumable_epochs(run, cfg.train.epochs, {"model": model, "optimizer": optimizer})
    for epoch, stats in train_epochs(cfg, data, model, optimizer, loop, progress):
        if epoch + 1 in keep:  # before the epoch's checkpoint: a resume recomputes the epoch and writes it again
            _save_weights(model, snapshot_path(run.dir, epoch + 1))
        test = evaluate(model, data.test)
        run.log(epoch=epoch + 1, train_loss=stats["loss"], train_acc=stats["acc"], test_acc=test["acc"],
                lr=lr_at(cfg.train, epoch + 1, cfg.train.epochs))
        progress.line(f"[pretrain] epoch {epoch + 1}/{cfg.train.epochs} loss {stats['loss']:.4f} "
                      f"train {stats['acc']:.4f} test {test['acc']:.4f}")
    run.save_model(model)
    return {**final_report(model, data, costs=False), "train_samples": data.train.num_samples}


# ------------------------------------------------------------------------------------------------ for dependents
def dense_config(cfg, keep: tuple[int, ...] | None = None) -> Config:
    """The pretraining config a pruning config depends on: same dataset/model/seed, its ``pretrain`` recipe, and its
    validation split (``val_size``, 0 for a script without one) held out, so the dense model never saw it either.
    ``keep``: epochs whose weights the dependent will rewind to (default: its ``rewind_epoch``, if any), kept as
    snapshots if this call computes the dense run (execution-only: the same run either way)."""
    if keep is None:
        keep = () if getattr(cfg, "rewind_epoch", None) is None else (cfg.rewind_epoch,)
    return Config(dataset=cfg.dataset, model=cfg.model, seed=cfg.seed, **{k: getattr(cfg, k) for k in IMAGE_OPTIONS},
                  train=cfg.pretrain, val_size=getattr(cfg, "val_size", 0),
                  **{**runtime_of(cfg), "snapshot_epochs": tuple(keep)})


def dense_runs(cfg) -> list:
    """What a script that starts from the dense model lists in its ``dependencies``: the dense run, unless the config
    starts from the user's own weights (``given_start``), when there is none to compute."""
    return [] if given_start(cfg) else [(SCRIPT, dense_config(cfg))]


def load_dense(cfg, run: Run, device: torch.device):
    """(model with the trained dense weights on ``device``, the dense run's result): the finished dense run that
    ``run``'s script declares (``dense_runs``), read through ``run.dependency``; or, from the user's own weights,
    (that model, its test accuracy and loss measured here)."""
    if given_start(cfg):
        model = prepare_model(start_model(cfg), device)
        data = load_dataset(cfg, root=cfg.data_dir, download=cfg.download, device=device, seed=cfg.seed,
                            workers=cfg.workers)
        test = evaluate(model, data.test)
        return model, {"test_acc": test["acc"], "test_loss": test["loss"]}
    dense = run.dependency(SCRIPT, dense_config(cfg))
    info = dataset_info(cfg)
    model = build_model(cfg.model, info.num_classes, info.input_shape)
    model.load_state_dict(torch.load(dense.dir / "model.pt", map_location="cpu", weights_only=True))
    return prepare_model(model, device), dense.result()


# ------------------------------------------------------------------------------------------- the user's own weights
STATE_ENTRIES = ("model", "state_dict", "model_state_dict")  # where a full checkpoint keeps its model's weights


def given_start(cfg) -> str:
    """The user's weights ``cfg`` starts from, as its option and value (``--dense-checkpoint FILE``, ``--dense-weights
    torchvision:<Weights>``), or "" when it has none (a config without these fields has none)."""
    checkpoint, weights = getattr(cfg, "dense_checkpoint", ""), getattr(cfg, "dense_weights", "")
    if checkpoint and weights:
        raise UserError(f"--dense-checkpoint {checkpoint} and --dense-weights {weights} both give the starting "
                        f"weights; give one of them")
    return f"--dense-checkpoint {checkpoint}" if checkpoint else f"--dense-weights {weights}" if weights else ""


def start_model(cfg, info=None) -> torch.nn.Module:
    """``cfg``'s model (on the CPU) for its dataset (``info``: its ``DatasetInfo``, read when None) holding the user's
    weights (``given_start``), or freshly initialized when it has none."""
    info = info or dataset_info(cfg)
    model = build_model(cfg.model, info.num_classes, info.input_shape)
    given = given_start(cfg)
    if given:
        path = cfg.dense_checkpoint or published_weights(cfg.dense_weights)
        state = read_state_dict(path, given if cfg.dense_checkpoint else f"{given} ({path})")
        load_weights(model, state, f"{given} does not match --model {cfg.model} (for {info.num_classes} classes)")
    return model


def read_state_dict(path, given: str) -> dict[str, torch.Tensor]:
    """The tensors of a state_dict file, or of a checkpoint's ``model`` / ``state_dict`` / ``model_state_dict`` entry,
    read with ``weights_only`` (data only: a file naming any class or function is refused, never executed); a
    checkpoint saved from a DataParallel / DDP wrapper (every name prefixed ``module.``) loses the prefix."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{given}: no such file; give the path of an existing file") from None
    except Exception as exc:  # noqa: BLE001 - not a torch file, or one that needs code to load
        why = " ".join(str(exc).split())[:160]
        raise UserError(f"{given} is not a torch state_dict file ({type(exc).__name__}: {why}); save one with "
                        f"torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict):
        state = next((state[k] for k in STATE_ENTRIES if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict) or not state or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        held = type(state).__name__ if not isinstance(state, dict) else \
            f"a dict of {', '.join(sorted({type(v).__name__ for v in state.values()})) or 'nothing'}"
        raise UserError(f"{given} holds {held}, not a state_dict (named tensors) nor a checkpoint with one as its "
                        f"{', '.join(STATE_ENTRIES)} entry")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], mismatch: str) -> None:
    """Load ``state`` into ``model``, every tensor of the model given once with its shape; otherwise a UserError
    ``mismatch`` naming the first difference in the model's order (a BatchNorm's ``num_batches_tracked`` may be
    missing, as torch allows)."""
    own = model.state_dict()
    problems = [f"it lacks {k}" if k not in state else
                f"its {k} has shape {tuple(state[k].shape)}, the model's {tuple(own[k].shape)}"
                for k in own if (k not in state and not k.endswith("num_batches_tracked"))
                or (k in state and state[k].shape != own[k].shape)]
    problems += [f"it has {k}, which the model has not" for k in state if k not in own]
    if problems:
        more = f" (and {len(problems) - 1} more differences)" if len(problems) > 1 else ""
        raise UserError(f"{mismatch}: {problems[0]}{more}; pass the --model (and dataset) the weights were trained as")
    model.load_state_dict(state, strict=False)


TORCHVISION_WEIGHTS = "torchvision:"


def published_weights(spec: str) -> Path:
    """The local file of torchvision's published weights ``torchvision:<Enum>.<NAME>``: where torchvision's own
    download keeps it, ``torch.hub.get_dir()/checkpoints/<file name of its URL>``; never downloaded here."""
    given = f"--dense-weights {spec}"
    name = spec[len(TORCHVISION_WEIGHTS):] if spec.startswith(TORCHVISION_WEIGHTS) else ""
    if not name:
        raise UserError(f"{given}: give torchvision:<Weights>.<name>, e.g. torchvision:ResNet50_Weights.IMAGENET1K_V2")
    if name.endswith(".DEFAULT"):
        raise UserError(f"{given}: name the weights themselves, not DEFAULT, whose meaning changes with torchvision's "
                        f"version while the run's identity holds the name (e.g. ResNet50_Weights.IMAGENET1K_V2)")
    import torchvision.models

    try:
        weights = torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise UserError(f"{given}: torchvision {torchvision.__version__} publishes no such weights; give "
                        f"torchvision:<Weights>.<name>, e.g. torchvision:ResNet50_Weights.IMAGENET1K_V2") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if not path.is_file():
        raise UserError(f"{given}: {path} not found (published weights are read from the local torch hub cache, "
                        f"never downloaded); fetch {weights.url} into {path.parent}, e.g. on a machine with network: "
                        f"python -c \"import torchvision; torchvision.models.get_weight('{name}').get_state_dict()\" "
                        f"(TORCH_HOME sets the cache folder)")
    return path


if __name__ == "__main__":
    from common.cli import main

    raise SystemExit(main(SCRIPT))
