"""The BiP paper's claims: accuracy BiP >= IMP > OMP at high sparsity, the sparsest winning tickets, wall time flat in
sparsity, no retraining ~ retraining from any rewinding point, structured BiP >= Hydra, the IG term."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from figures.bip import fig_bip_rewind
from figures.bip import runs as BR
from figures.claims import paper, scale
from figures.claims.board import MARGIN, Board, Link, per_seed
from figures.claims.rule import FAILS, HOLDS, INCONCLUSIVE, MIXED, NOT_TESTABLE

PAPER = "BiP"
HIGH_LOSS = 1.0         # pt: "high sparsity" is where OMP (IMP where a setup has no OMP) loses this much to dense
FLAT, GROWS = 1.5, 2.0  # time max/min below FLAT: flat in sparsity; above GROWS: grows


def pct(values) -> list[float]:
    """Fractions as the percentages ``BR.tidy`` gives (``x``: two decimals), sorted, each once."""
    return list((100 * pd.Series(sorted(set(values)), dtype=float)).round(2))


def at(tidy: pd.DataFrame, x: float, value: str = "acc", **match) -> pd.Series:
    if tidy.empty:
        return pd.Series(dtype=float)
    sel = np.isclose(tidy["x"].astype(float), x)
    for key, v in match.items():
        sel &= (tidy[key] == v).to_numpy()
    return per_seed(tidy[sel], value)


def claims(board: Board) -> None:
    trajectory(board)
    time(board)
    rewind(board)
    structured(board)
    ig(board)


def imp_epochs(cfg, x: float) -> float:
    """IMP's accumulated retraining epochs at sparsity ``x`` (%): its rounds to get there times epochs per round."""
    return round(math.log(1 - x / 100) / math.log(1 - cfg.rate)) * cfg.epochs


def trajectory(board: Board) -> None:
    name = "fig-bip-trajectory"
    plan, data = board.plan(name), board.data(name)
    tidy = BR.tidy(data) if len(data) else pd.DataFrame()
    for setup, runs in plan.groupby("setup", sort=False):
        long = longer(setup)  # BiP's longer arm, where the profile has one: labelled "bip-long" as BR.tidy does
        runs = runs.assign(method=[("bip-long" if m == "bip" and c.epochs == long else m)
                                   for m, c in zip(runs["method"], runs["cfg"])])
        methods = [m for m in ("bip", "imp", "omp") if m in set(runs["method"])]
        grid = pct(runs.loc[runs["method"] == "bip", "target_sparsity"])
        ref = "omp" if "omp" in methods else "imp"
        claim = f"accuracy {' > '.join(BR.LABELS[m] for m in methods).replace('>', '>=', 1)} at high sparsity"
        compared = (f"{setup}: test accuracy (%) of {', '.join(BR.LABELS[m] for m in methods)} at the grid "
                    f"sparsities ({len(grid)}: {grid[0]:g}-{grid[-1]:g}%), "
                    f"{board.seeds_text(runs[runs['method'] != 'imp'], ('method', 'target_sparsity'))}, paired by "
                    "seed (one dense model per seed); IMP: its round at that sparsity")
        missing = board.missing(name, runs[runs["method"].isin(methods + ["bip-long"])])
        if missing:
            board.add(PAPER, claim, name, compared, "", [], missing)
            board.add(PAPER, "BiP's sparsest winning ticket at least as sparse as IMP's", "tab-bip-tickets",
                      compared, "", [], missing)
            continue
        t = tidy[tidy["setup"] == setup]
        dense = per_seed(t.drop_duplicates("config.seed"), "dense")
        loss = {x: float((dense - at(t, x, method=ref)).mean()) for x in grid}
        high = [x for x in grid if loss[x] >= HIGH_LOSS]
        regime = (f"high sparsity: where {BR.LABELS[ref]} loses >= {HIGH_LOSS:g} pt to the dense model "
                  f"({dense.mean():.2f}%), from the runs: " + (", ".join(f"{x:g}% (-{loss[x]:.2f})" for x in high)
                                                               if high else "no grid point"))
        if not high:
            board.put(PAPER, claim, name, compared, regime, f"{BR.LABELS[ref]}'s largest loss to dense: "
                      f"{max(loss.values()):.2f} pt", "", NOT_TESTABLE,
                      f"no grid sparsity where {BR.LABELS[ref]} loses >= {HIGH_LOSS:g} pt: the regime is not reached")
        else:
            links = [Link(BR.LABELS[a], BR.LABELS[b], {f"{x:g}%": (at(t, x, method=a), at(t, x, method=b))
                                                      for x in high},
                          kind="non-inferiority" if i == 0 else "superiority", paper=paper.bip_fig6(a, b))
                     for i, (a, b) in enumerate(zip(methods, methods[1:]))]
            imp = runs[runs["method"] == "imp"]["cfg"].iloc[0]
            bip = runs[runs["method"] == "bip"]["cfg"].iloc[0]
            budget = (f"BiP trains {bip.epochs} epochs per sparsity; IMP has accumulated "
                      + ", ".join(f"{imp_epochs(imp, x):g} at {x:g}%" for x in high)
                      + f" ({imp.epochs} per round) from the same dense model")
            verdict = board.add(PAPER, claim, name, compared, regime, links, budget=budget)
            row = board.rows[-1]
            if verdict in (FAILS, MIXED):
                row["detail"] += (". Against the paper where IMP leads: IMP has trained "
                                  f"{imp_epochs(imp, high[0]) / bip.epochs:g}x or more BiP's epochs there")
            if long:
                arm = longer_arm(board, runs, t, high, long, imp, compared, regime)
                row["detail"] += f". BiP's longer arm ({long} epochs) >= IMP: {arm}"
        tickets(board, setup, t, grid, dense, compared)


def longer(setup: str) -> int | None:
    """The epochs of BiP's longer arm in ``setup`` (``BR.long_arms``), where the profile table has one."""
    return BR.long_arms().get(setup)


def longer_arm(board: Board, runs, t, high, long: int, imp, compared: str, regime: str) -> str:
    """BiP's longer arm against IMP at its high-sparsity points: does more training close IMP's lead (a budget
    artifact)? Its own row; returns its verdict."""
    xs = [x for x in pct(runs.loc[runs["method"] == "bip-long", "target_sparsity"]) if x in high]
    budget = (f"BiP's longer arm trains {long} epochs per sparsity; IMP has accumulated "
              + ", ".join(f"{imp_epochs(imp, x):g} at {x:g}%" for x in xs))
    return board.add(PAPER, f"BiP >= IMP at high sparsity with BiP trained longer ({long} epochs)",
                     "fig-bip-trajectory", compared + f"; BiP's longer arm at {', '.join(f'{x:g}%' for x in xs)}",
                     regime, [Link(BR.LABELS.get("bip-long", "BiP, longer"), "IMP",
                                   {f"{x:g}%": (at(t, x, method="bip-long"), at(t, x, method="imp")) for x in xs},
                                   kind="non-inferiority", paper=paper.bip_fig6("bip", "imp"))], budget=budget)


def tickets(board: Board, setup: str, t: pd.DataFrame, grid: list[float], dense: pd.Series, compared: str) -> None:
    """The sparsest winning ticket: the highest grid sparsity whose mean accuracy over the seeds is within the
    tolerance (k seed SDs of the dense models, k from the profile table's ``BR.TICKET_TOLERANCE``) of the dense
    model's mean; BiP vs IMP on the grid both share."""
    claim, name = "BiP's sparsest winning ticket at least as sparse as IMP's", "tab-bip-tickets"
    k = BR.TICKET_TOLERANCE[board.profile]
    tol = k * float(dense.std(ddof=1)) if len(dense) > 1 else 0.0
    floor = float(dense.mean()) - tol
    means = {m: {x: float(at(t, x, method=m).mean()) for x in grid} for m in ("bip", "imp")}
    ticket = {m: max((x for x in grid if means[m][x] >= floor), default=None) for m in means}
    regime = (f"a ticket: mean accuracy >= dense {dense.mean():.2f}% - tolerance {tol:.2f} ({k:g} seed SD of the "
              f"dense models) = {floor:.2f}%, on the {len(grid)} grid sparsities {grid[0]:g}-{grid[-1]:g}%")
    text = "; ".join(f"{BR.LABELS[m]}: " + ("none" if ticket[m] is None else f"{ticket[m]:g}% "
                                            f"({means[m][ticket[m]]:.2f}%)") + f", at {grid[0]:g}%: "
                     f"{means[m][grid[0]]:.2f}%" for m in means)
    b, i = ticket["bip"], ticket["imp"]
    if b is None and i is None:
        low = grid[0]
        verdict, why = NOT_TESTABLE, (f"both lose more than the tolerance already at the grid's lowest sparsity "
                                      f"{low:g}% (BiP {means['bip'][low]:.2f}%, IMP {means['imp'][low]:.2f}% vs "
                                      f"{floor:.2f}%): the grid has no point between the sparsities that decide it")
    elif b is not None and i is not None and b == i:
        verdict, why = INCONCLUSIVE, f"both tickets at {b:g}%: the grid cannot order them"
    elif i is None or (b is not None and b > i):
        verdict, why = HOLDS, "BiP's ticket is sparser on the grid"
    else:
        verdict, why = FAILS, "IMP's ticket is sparser on the grid"
    board.put(PAPER, claim, name, compared, regime, text, "ticket rule: grid tickets of the seed means within the "
              "tolerance; not testable when neither method has a ticket on the grid", verdict, why)


def time(board: Board) -> None:
    name = "fig-bip-time"
    plan, data = board.plan(name), board.data(name)
    claim = "BiP's wall time flat in sparsity while IMP's grows"
    rule = (f"time rule (a threshold, not a test: one wall time per run): holds when BiP's max/min over the grid "
            f"< {FLAT:g} and IMP's at the largest / at the smallest grid sparsity > {GROWS:g}; does not hold when "
            f"BiP's > {GROWS:g} or IMP's < {FLAT:g}; fastest seed per point (least disturbed by other load)")
    tidy = BR.tidy(data) if len(data) else pd.DataFrame()
    for setup, runs in plan[plan["script"] != "common.pretrain"].groupby("setup", sort=False):
        grid = pct(runs.loc[runs["method"] == "bip", "target_sparsity"])
        compared = (f"{setup}: wall time (s) of BiP (each run) and IMP (cumulative over its rounds) at the "
                    f"{len(grid)} grid sparsities {grid[0]:g}-{grid[-1]:g}%, "
                    f"{board.seeds_text(runs[runs['method'] == 'bip'], ('method', 'target_sparsity'))}")
        if board.not_run(PAPER, claim, name, compared, runs[runs["method"].isin(("bip", "imp"))]):
            continue
        t = tidy[tidy["setup"] == setup]
        fastest = {m: [float(at(t, x, "time", method=m).min()) for x in grid] for m in ("bip", "imp")}
        b = max(fastest["bip"]) / min(fastest["bip"])
        i = fastest["imp"][-1] / fastest["imp"][0]
        verdict = (HOLDS if b < FLAT and i > GROWS else FAILS if b > GROWS or i < FLAT else INCONCLUSIVE)
        board.put(PAPER, claim, name, compared, "", f"BiP max/min {b:.2f} ({min(fastest['bip']):.3g}-"
                  f"{max(fastest['bip']):.3g} s); IMP at {grid[-1]:g}% / at {grid[0]:g}%: {i:.2f} "
                  f"({fastest['imp'][0]:.3g} to {fastest['imp'][-1]:.3g} s)", rule, verdict,
                  f"BiP {b:.2f} (flat: < {FLAT:g}), IMP {i:.2f} (grows: > {GROWS:g})")


def rewind(board: Board) -> None:
    name = "fig-bip-rewind"
    plan, data = board.plan(name), board.data(name)
    tidy = fig_bip_rewind.tidy(data) if len(data) else pd.DataFrame()
    labels = fig_bip_rewind.labels()
    for setup, runs in plan.groupby("setup", sort=False):
        xs = pct(runs["target_sparsity"])
        claim = "BiP without retraining ~ its mask retrained from any rewinding point"
        compared = (f"{setup}: test accuracy (%) of BiP without retraining vs its mask retrained from "
                    f"{len(labels) - 1} rewinding points ({', '.join(labels[1:])} of the dense training) at "
                    f"{', '.join(f'{x:g}%' for x in xs)}, {runs['seed'].nunique()} seeds, paired by seed")
        if board.not_run(PAPER, claim, name, compared, runs):
            continue
        t = tidy[tidy["setup"] == setup]
        links = [Link("no retraining", f"rewind {lab}", {f"{x:g}%": (at(t, x, rewind="no retrain"),
                                                                    at(t, x, rewind=lab)) for x in xs},
                      kind="equivalence") for lab in labels[1:]]
        board.add(PAPER, claim, name, compared, f"equivalence within the practical margin +-{MARGIN:g} pt at every "
                  "rewinding point (each link must hold: an intersection of equivalence tests)", links)
        full_length(board, name, setup, t, xs)


def full_length(board: Board, name: str, setup: str, t: pd.DataFrame, xs: list[float]) -> None:
    """BiP without retraining against its mask retrained for the dense model's full length from the rewinding point
    of ``BR.REWIND_FULL`` (where the profile table has one): equivalence within the dense models' seed SD (the
    accuracy two dense trainings differ by), so that retraining's longer budget cannot be what the claim rests on."""
    longer = fig_bip_rewind.arms(t)[len(fig_bip_rewind.labels()):]
    if not longer:
        return
    dense = per_seed(t, "dense")
    margin = float(dense.std(ddof=1)) if len(dense) > 1 else MARGIN
    links = [Link("no retraining", f"rewind {lab}", {f"{x:g}%": (at(t, x, rewind="no retrain"), at(t, x, rewind=lab))
                                                     for x in xs}, kind="equivalence", margin=margin)
             for lab in longer]
    board.add(PAPER, "BiP without retraining ~ its mask retrained for the dense length", name,
              f"{setup}: test accuracy (%) of BiP without retraining vs its mask retrained from "
              f"{', '.join(longer)} at {', '.join(f'{x:g}%' for x in xs)}, {len(dense)} seeds, paired by seed",
              f"equivalence within the dense models' seed SD, +-{margin:.2f} pt ({len(dense)} dense models)", links)


def structured(board: Board) -> None:
    name = "fig-bip-structured"
    plan, data = board.plan(name), board.data(name)
    tidy = BR.tidy(data) if len(data) else pd.DataFrame()
    papers = [cfg for _, cfg in board.sources[name].runs("paper")]
    for (setup, structure), runs in plan.groupby(["setup", "structure"], sort=False):
        xs = pct(runs["target_sparsity"])
        claim = f"structured ({structure}-wise) BiP >= Hydra"
        compared = (f"{setup}, {structure}-wise: test accuracy (%) at {', '.join(f'{x:g}%' for x in xs)} of the "
                    f"{structure}s removed per conv layer, {runs['seed'].nunique()} seeds, paired by seed")
        ok, reason = scale.units(runs["cfg"].iloc[0], [c for c in papers if c.structure == structure] or papers)
        if not ok:  # the models' units, from the configs: no run needed
            board.untestable(PAPER, claim, name, compared, reason)
            continue
        missing = board.missing(name, runs)
        t = tidy[(tidy["setup"] == setup) & (tidy["config.structure"] == structure)] if len(tidy) else tidy
        board.add(PAPER, claim, name, compared, f"every ratio of the grid ({reason})",
                  [Link("BiP", "Hydra", {f"{x:g}%": (at(t, x, method="bip"), at(t, x, method="hydra")) for x in xs},
                        kind="non-inferiority")], missing)


def ig(board: Board) -> None:
    name = "fig-bip-ig"
    plan, data = board.plan(name), board.data(name)
    tidy = BR.tidy(data) if len(data) else pd.DataFrame()
    gammas = {n: BR.prune_config(s).gamma for n, s in BR.setups(board.profile).items()}
    for setup, runs in plan.groupby("setup", sort=False):
        xs, gamma = pct(runs["target_sparsity"]), gammas[setup]
        claim = "the implicit-gradient term improves accuracy"
        compared = (f"{setup}: test accuracy (%) of BiP with the IG term at the configs' gamma ({gamma:g}) vs "
                    f"without it (--ig none) at {', '.join(f'{x:g}%' for x in xs)}, {runs['seed'].nunique()} seeds")
        used = runs[((runs["cfg"].map(lambda c: c.ig) == "paper") & (runs["cfg"].map(lambda c: c.gamma) == gamma))
                    | (runs["cfg"].map(lambda c: c.ig) == "none")]
        if board.not_run(PAPER, claim, name, compared, used):
            continue
        t = tidy[tidy["setup"] == setup]
        with_ig = t[(t["config.ig"] == "paper") & np.isclose(t["config.gamma"].astype(float), gamma)]
        ok, reason = scale.ig_ratio(with_ig)
        if not ok:
            board.untestable(PAPER, claim, name, compared, reason)
            continue
        board.add(PAPER, claim, name, compared, reason,
                  [Link("IG", "no IG", {f"{x:g}%": (at(with_ig, x), at(t[t["config.ig"] == "none"], x))
                                        for x in xs})])
