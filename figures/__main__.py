"""python -m figures NAME [NAME ...] | all | list  [--profile small|smoke|tiny|paper] [--cluster auto|none|local|slurm]
                                                 [--out DIR] [--device auto|cpu|cuda|cuda:N]
python -m figures plan NAME [NAME ...] | all  [--profile ...] [--runs]   (what they need and cost, computing nothing:
figures/cost.py, common/cost.py, figures/epoch_times.toml)

Profiles (figures/profiles.py): small (the default: Fashion-MNIST, the papers' findings at laptop scale), smoke (tiny's
runs thinned to one seed and two grid points per figure: every code path in minutes), tiny (digits: a smoke test,
not evidence), paper. Cluster auto: a pool of local processes on a machine of more than one core, else in process."""
from __future__ import annotations

import os
import re
from pathlib import Path

from common.config import OneLineParser
from figures import FIGURES
from figures.profiles import SCOREBOARD

DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def timed_first(names: list[str]) -> list[str]:
    """``names`` with the figures whose runs' wall times are their subject (``TIMED = True`` in their module) first:
    their runs are then timed in one homogeneous sequence (seed-major over the sparsity grid) rather than inside other
    figures' sweeps, where a run's time depended on the work around it (measured: the same BiP run 15-30% slower
    inside fig-bip-ig's gamma sweep)."""
    from figures.pipeline import figure_module

    timed = [n for n in names if getattr(figure_module(n), "TIMED", False)]
    return timed + [n for n in names if n not in timed]


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m figures", description=__doc__)
    parser.add_argument("names", nargs="+", help="figure/table targets (fig-..., tab-...), 'all', or 'list'; "
                                                  "'plan' followed by targets or 'all': their runs and cost only")
    parser.add_argument("--profile", default="small",
                        help="small (Fashion-MNIST: the findings at laptop scale), smoke (every code path in "
                             "minutes), tiny (digits: a smoke test, not evidence) or paper")
    parser.add_argument("--cluster", default="auto", choices=("auto", "none", "local", "slurm"),
                        help="where missing runs are computed: in this process, a pool of local processes, or "
                             "submitted as a Slurm job array (resources: slurm/resources.toml, PRUNING_SLURM_*); "
                             "auto: local on a machine of more than one core, else none")
    parser.add_argument("--runs-dir", default="runs", help="root of the run store (default: runs, in the current "
                                                             "directory)")
    parser.add_argument("--out", default=None,
                        help="folder the figures are drawn into, as OUT/<profile>/<name>.* (default: this "
                             "repository's figures/out)")
    parser.add_argument("--data-dir", default="data", help="folder that holds the datasets (default: data, in the "
                                                           "current directory)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--progress", default="off", choices=("off", "lines", "bar", "auto"),
                        help="per-epoch output of each run")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --cluster slurm: print the sbatch scripts of the missing runs; submit, compute and "
                             "draw nothing")
    parser.add_argument("--runs", action="store_true", help="plan: list every run (state, directory, cost)")
    parser.add_argument("--published-dense", action="store_true",
                        help="plan: start the runs that prune an ImageNet ResNet-50 from torchvision's published "
                             "weights (--dense-weights) instead of training the dense model, and print what it saves")
    parser.add_argument("--epoch-times", default=None,
                        help="plan: the table of epoch times and step costs (default figures/epoch_times.toml)")
    args = parser.parse_args(argv)
    if not DEVICE.fullmatch(args.device):
        parser.error(f"unknown device '{args.device}'; choose auto, cpu, cuda or cuda:N")
    if args.names == ["list"]:
        from figures.pipeline import figure_module

        for name in FIGURES:
            print(f"{name:28s} {figure_module(name).PAPER}")
        return 0
    planning = args.names[0] == "plan"
    names = args.names[1:] if planning else args.names
    if planning and not names:
        parser.error("plan needs the figures to plan: one or more targets (fig-..., tab-...) or 'all'")
    if names == ["all"]:
        names = timed_first([n for n in FIGURES if n != "tab-claims" or args.profile in SCOREBOARD])
    if "tab-claims" in names and args.profile not in SCOREBOARD:
        parser.error(f"tab-claims: no scoreboard at the {args.profile} profile (a smoke test, not evidence); "
                     f"use --profile {' or '.join(SCOREBOARD)}")
    cluster = ("local" if (os.cpu_count() or 1) > 1 else "none") if args.cluster == "auto" else args.cluster
    if args.dry_run and (cluster != "slurm" or planning):
        parser.error("--dry-run prints the sbatch scripts of a Slurm submission: use it with --cluster slurm "
                     "(CLUSTER=slurm), not with plan")
    device = "cuda" if args.profile == "paper" and args.device == "auto" else args.device  # paper: a GPU or an error
    runtime = {"runs_dir": args.runs_dir, "data_dir": args.data_dir, "device": device,
               "progress": args.progress}
    from common.errors import exit_code

    if planning:
        from common.cost import TABLE
        from figures.cost import plan

        return exit_code(lambda: plan(names, args.profile, runtime, args.epoch_times or TABLE, args.runs,
                                             published=args.published_dense))
    from figures.pipeline import OUT, compute_ahead, figure_module, make

    out_root = Path(args.out) if args.out else OUT

    def build():
        failed = {}
        if cluster == "local" and len(names) > 1:  # every figure's runs in one pool, the timed figures' first
            timed = [n for n in names if getattr(figure_module(n), "TIMED", False)]
            failed = compute_ahead([timed, [n for n in names if n not in timed]], args.profile, runtime)
        return [make(name, args.profile, cluster, runtime, out_root, failed, args.dry_run) for name in names]

    return exit_code(build, where=lambda: args.runs_dir)  # the disk a full-disk error names when the writer does not


if __name__ == "__main__":
    raise SystemExit(main())
