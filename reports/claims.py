"""The paper's claims, each judged from paired differences of exactly the arms it compares (MSF Secs. 3.2, 4.1, 4.2,
5; Tables 1-5, Figs. 2, 4).

A verdict is ``supported``, ``contradicted`` or ``not resolvable at this preset``. Two arms (settings) are compared
run by run: the runs of one arm are paired with the runs of the other that share their (training seed, sampling
seed), each pair gives a difference, and the differences give a 95% Student-t interval. When the pairs span two or
more training seeds, the pairs of one training seed share a trained model and are not independent, so they are
averaged first and the interval runs over training seeds; with a single training seed (or a pretrained model) it
runs over sampling seeds and covers sampling noise only, which the evidence says. An arm without a training seed
(pretrained weights, real images) pairs by sampling seed alone. Fewer than two independent units give no interval,
and a claim that needs one is not resolvable. The rules are in :data:`RULES` and printed in every report.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scipy.special import stdtrit

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
UNRESOLVED = "not resolvable at this preset"

LEVEL = 0.95  # two-sided confidence level of every interval
MUCH_LOWER = 0.5  # "much lower" loss: at most half
SPEEDUP = 2.0  # "2x faster"
TIMING_SLACK = 0.9  # accept a measured speedup >= SPEEDUP * TIMING_SLACK (timing jitter of a shared machine)
EQUAL_FID_MARGIN = 0.05  # "equal FID" (Table 1: 2.2 vs 2.27): MSF no worse than the baseline by 5% of its FID
BEST_CFG_SCALE1 = (1.4,)  # Table 2 caption: "The FID achieves the best results at 1.4"
BEST_STEPS_SCALE1 = (100.0, 125.0)  # Table 4 caption: "better results at 100 and 125 sampling steps"
RESIZINGS = ("latent_resize", "image_resize")  # Fig. 2 (a), (b)

RULES = (
    "Intervals: runs of two arms are paired by (training seed, sampling seed) and d = FID(first) - FID(second) is "
    f"taken per pair; the {100 * LEVEL:g}% interval is Student t over the pairs, after averaging the pairs of each "
    "training seed when there are two or more training seeds (then n = training seeds; with one training seed n = "
    "sampling seeds, covering sampling noise only). An arm without a training seed (pretrained, real images) pairs "
    "by sampling seed. Fewer than 2 units: no interval, and the claim is not resolvable.",
    "Best-setting claims (Tables 2, 4): d = FID(other) - FID(claimed) for every other setting measured; supported "
    "when one claimed setting beats every other (each interval above 0), contradicted when another setting beats "
    "every claimed setting (interval below 0; all claimed settings measured), else not resolvable.",
    "Flat claims (Tables 3, 5), an equivalence test with tolerance t = the paper's printed range for that table "
    "(0.03, 0.05 FID, applied to our FID as is): d for every pair of settings; supported only when every interval "
    "lies inside [-t, t], contradicted when one interval lies entirely outside it, else not resolvable (large noise "
    "never supports a flat claim).",
    f"Factorization (Fig. 2): d = FID(resizing) - FID(residual) for each of {', '.join(RESIZINGS)}, each with its own "
    "interval; supported when both intervals are above 0, contradicted when either is below 0, else not resolvable.",
    f"Loss (Fig. 4): the paper's arm only (2-scale residual MSF, adaLN-Zero), each run folder once: per training seed "
    f"q = final_loss_ema100(stage 1, the paper's scale 2) / final_loss_ema100(stage 0); interval over training seeds; "
    f"supported when its upper end <= {MUCH_LOWER:g}, contradicted when its lower end >= 1, else not resolvable.",
    f"Speed (Table 1), 'at equal FID' as a non-inferiority test: same device and dtype required; d = FID(MSF) - "
    f"FID(baseline) paired, margin m = {100 * EQUAL_FID_MARGIN:g}% of the baseline's mean FID (the paper: 2.2 vs "
    f"2.27), speedup S = time(baseline) / time(MSF) per 64 images. Contradicted when d's interval lies above m (MSF "
    f"worse); when its upper end is <= m: supported if S >= {SPEEDUP * TIMING_SLACK:g} ({SPEEDUP:g}x with "
    f"{100 * (1 - TIMING_SLACK):.0f}% timing slack), not resolvable if d's interval is below 0 (MSF better, so "
    "'at equal FID' is not established), else contradicted; not resolvable when the interval is missing or reaches "
    "past m (large noise never supports the claim).",
)

TREND_RULE = (
    "Trends beside a stand-in (Tables 2-5): per training seed measured at every setting of a sweep (its FIDs averaged "
    "over sampling seeds; with one training seed, per sampling seed), the least-squares slope of FID against the "
    "swept setting times the swept range gives the fitted FID change across the sweep; the 95% Student-t interval "
    "runs over those units. A trend is resolved when its interval excludes 0; two resolved trends of opposite sign "
    "are reversed."
)


# ----------------------------------------------------------------------------------------------------------------------
# Paired differences and their intervals

SeedPair = tuple[int | None, int]  # (training seed or None for pretrained / real, sampling seed)


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison: a measured value per run, keyed by (training seed, sampling seed)."""

    label: str
    values: Mapping[SeedPair, float]


@dataclass(frozen=True)
class Interval:
    """A mean paired difference and its two-sided Student-t interval over n independent units."""

    mean: float
    lo: float  # nan when n < 2
    hi: float
    n: int
    unit: str  # what n counts, singular: "training seed" or "sampling seed"
    pairs: int
    note: str = ""  # e.g. "one training seed: sampling noise only"

    @property
    def defined(self) -> bool:
        """Whether there are two or more units, so that the interval exists."""
        return self.n >= 2 and math.isfinite(self.lo) and math.isfinite(self.hi)

    def text(self, signed: bool = True) -> str:
        """'+0.52 [+0.31, +0.73], 95% t over 3 training seeds'."""
        f = "+.3g" if signed else ".3g"
        units = f"{self.n} {self.unit}{'' if self.n == 1 else 's'}" + (f"; {self.note}" if self.note else "")
        if not self.defined:
            return f"{self.mean:{f}} (no interval: {units})"
        return f"{self.mean:{f}} [{self.lo:{f}}, {self.hi:{f}}], {100 * LEVEL:g}% t over {units}"


def t_interval(values: Sequence[float], unit: str, pairs: int, note: str = "") -> Interval:
    """Mean and Student-t interval of independent values (nan bounds when fewer than 2)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, unit, pairs, note)
    half = float(stdtrit(n - 1, 0.5 + LEVEL / 2)) * statistics.stdev(values) / math.sqrt(n)  # Student t quantile
    return Interval(mean, mean - half, mean + half, n, unit, pairs, note)


def pair_differences(a: Arm, b: Arm) -> list[tuple[int | None, int, float]]:
    """(training seed, sampling seed, a - b) for every run pair sharing its seeds; an arm without a training seed
    pairs by sampling seed alone."""
    out = []
    for (ta, sa), va in sorted(a.values.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0, kv[0][1])):
        for (tb, sb), vb in b.values.items():
            if sa == sb and (ta == tb or ta is None or tb is None):
                out.append((ta if ta is not None else tb, sa, va - vb))
    return out


def seed_units(keys: Sequence[SeedPair]) -> tuple[list[list[int]], str, str]:
    """Rule 1's independent units over runs given by their (training seed, sampling seed): positions grouped by
    training seed when there are two or more (runs of one training seed share a model), else one unit per run, with
    a note when that is one trained model's sampling noise only; returns (groups, unit, note)."""
    trained = sorted({t for t, _ in keys if t is not None})
    if len(trained) >= 2:
        return [[i for i, (t, _) in enumerate(keys) if t == u] for u in trained], "training seed", ""
    return [[i] for i in range(len(keys))], "sampling seed", "one training seed: sampling noise only" if trained else ""


def paired(a: Arm, b: Arm) -> Interval | None:
    """FID(a) - FID(b) over paired runs with its interval (module docstring); None when no run pairs."""
    diffs = pair_differences(a, b)
    if not diffs:
        return None
    groups, unit, note = seed_units([(t, s) for t, s, _ in diffs])
    return t_interval([statistics.fmean(diffs[i][2] for i in g) for g in groups], unit, len(diffs), note)


def trend(arms: Mapping[float, Arm]) -> Interval | None:
    """Fitted FID change across a sweep's range with its interval (TREND_RULE); None when fewer than 2 settings
    share a run unit."""
    xs = sorted(arms)
    common = set.intersection(*(set(arms[x].values) for x in xs)) if len(xs) >= 2 else set()
    if not common:
        return None
    keys = sorted(common, key=lambda k: (k[0] is None, k[0] or 0, k[1]))
    groups, unit, note = seed_units(keys)
    span, mean_x = xs[-1] - xs[0], statistics.fmean(xs)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    changes = []
    for g in groups:
        ys = [statistics.fmean(arms[x].values[keys[i]] for i in g) for x in xs]
        mean_y = statistics.fmean(ys)
        changes.append(span * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx)
    return t_interval(changes, unit, len(common) * len(xs), note)


def compare_trends(ours: Interval | None, theirs: Interval | None, where: tuple[str, str]) -> str:
    """How two sweeps' trends relate (TREND_RULE): same direction, reversed, resolved on one only, or neither."""

    def sign(iv: Interval | None) -> int:
        """+1 or -1 for a resolved trend, 0 for an unresolved or missing one."""
        if iv is None or not iv.defined or iv.lo <= 0 <= iv.hi:
            return 0
        return 1 if iv.lo > 0 else -1

    absent = [w for w, iv in zip(where, (ours, theirs), strict=True) if iv is None]
    if absent:
        return f"not measured on {' and '.join(absent)}"
    open_ = [w for w, iv in zip(where, (ours, theirs), strict=True) if not iv.defined]  # type: ignore[union-attr]
    if open_:
        return f"no interval on {' and '.join(open_)}"
    a, b = sign(ours), sign(theirs)
    word = {1: "rises", -1: "falls"}
    if a and b:
        return "same direction" if a == b else f"reversed: FID {word[a]} on {where[0]}, {word[b]} on {where[1]}"
    if a or b:
        side, other, s = (where[0], where[1], a) if a else (where[1], where[0], b)
        return f"FID {word[s]} on {side}; no resolved trend on {other}"
    return "no resolved trend on either"


# ----------------------------------------------------------------------------------------------------------------------
# Verdicts


@dataclass(frozen=True)
class Verdict:
    """One claim of the paper, our evidence, the deciding difference with its interval, and the verdict."""

    claim: str
    evidence: str
    verdict: str
    interval: str = "—"
    fid_difference: float | None = None  # the deciding FID difference's mean, when the claim is decided by one


@dataclass(frozen=True)
class Timed:
    """FID per run and mean sampling time per 64 images of one model setting, for the speed claim (Table 1)."""

    label: str
    fid: Arm
    time: float
    device: str
    dtype: str


@dataclass(frozen=True)
class LossPair:
    """final_loss_ema100 of stage 0 and stage 1 of the paper's arm at one training seed, with their folders (Fig. 4)."""

    stage0: float
    stage1: float
    folders: tuple[str, str]


@dataclass
class Evidence:
    """Everything the claims are judged on, extracted from run folders by the report builder."""

    tolerance_cfg_scale2: float  # Table 3's printed range (0.03)
    tolerance_steps_scale2: float  # Table 5's printed range (0.05)
    cfg_scale1: dict[float, Arm] = field(default_factory=dict)  # Table 2: FID by cfg[0]
    cfg_scale2: dict[float, Arm] = field(default_factory=dict)  # Table 3: FID by cfg[1]
    steps_scale1: dict[float, Arm] = field(default_factory=dict)  # Table 4: FID by steps[0]
    steps_scale2: dict[float, Arm] = field(default_factory=dict)  # Table 5: FID by steps[1]
    factorization: dict[str, Arm] = field(default_factory=dict)  # Fig. 2: FID by factorization, other settings equal
    loss: dict[int, LossPair] = field(default_factory=dict)  # Fig. 4: the paper's arm by training seed
    speed: tuple[Timed, Timed] | None = None  # (MSF, baseline) evaluated alike


def _num(x: float) -> str:
    """A setting in evidence text: up to 4 significant digits."""
    return f"{x:.4g}"


def _mean(iv: Interval | None) -> float | None:
    """The mean of a deciding difference, if there is one."""
    return None if iv is None else iv.mean


def _diff(a: str, b: str, iv: Interval | None) -> str:
    """'FID(a) - FID(b) = +0.52 [+0.31, +0.73], 95% t over 3 training seeds'."""
    return f"FID({a}) - FID({b}) = " + (iv.text() if iv is not None else "no run pairs")


def judge_best(claim: str, arms: Mapping[float, Arm], best: Sequence[float]) -> Verdict:
    """A claim that FID is lowest at the claimed setting(s): Rule 2 (Tables 2, 4)."""
    inside = {x: a for x, a in arms.items() if any(math.isclose(x, b) for b in best)}
    outside = {x: a for x, a in sorted(arms.items()) if x not in inside}
    if not inside or not outside:
        what = "claimed setting(s) " + "/".join(map(_num, best)) if not inside else "every setting but the claimed"
        return Verdict(claim, f"{what} not measured (measured: {', '.join(map(_num, sorted(arms))) or 'none'})",
                       UNRESOLVED)
    ivs = {(o, c): paired(outside[o], inside[c]) for o in outside for c in inside}

    def above(iv: Interval | None) -> bool:
        """The claimed setting is better: the interval of FID(other) - FID(claimed) lies above 0."""
        return iv is not None and iv.defined and iv.lo > 0

    def below(iv: Interval | None) -> bool:
        """The other setting is better: the interval lies below 0."""
        return iv is not None and iv.defined and iv.hi < 0

    lines = [_diff(_num(o), _num(c), iv) for (o, c), iv in ivs.items()]
    evidence = "; ".join(lines)
    for c in sorted(inside):
        if all(above(ivs[o, c]) for o in outside):
            o = min(outside, key=lambda o: ivs[o, c].lo)  # type: ignore[union-attr]
            return Verdict(claim, evidence, SUPPORTED, _diff(_num(o), _num(c), ivs[o, c]), _mean(ivs[o, c]))
    complete = all(any(math.isclose(x, b) for x in inside) for b in best)
    for o in outside:
        if complete and all(below(ivs[o, c]) for c in inside):
            c = max(inside, key=lambda c: ivs[o, c].hi)  # type: ignore[union-attr]
            return Verdict(claim, evidence, CONTRADICTED, _diff(_num(o), _num(c), ivs[o, c]), _mean(ivs[o, c]))
    means = {x: statistics.fmean(a.values.values()) for x, a in arms.items() if a.values}
    c = min(inside, key=lambda x: means.get(x, math.inf))
    o = min(outside, key=lambda x: means.get(x, math.inf))
    return Verdict(claim, evidence, UNRESOLVED, _diff(_num(o), _num(c), ivs[o, c]), _mean(ivs[o, c]))


def judge_flat(claim: str, arms: Mapping[float, Arm], tolerance: float) -> Verdict:
    """A claim that FID does not change across a sweep, as an equivalence test within +-tolerance: Rule 3
    (Tables 3, 5)."""
    xs = sorted(arms)
    if len(xs) < 2:
        return Verdict(claim, f"fewer than 2 settings measured ({', '.join(map(_num, xs)) or 'none'})", UNRESOLVED)
    ivs = {(a, b): paired(arms[b], arms[a]) for i, a in enumerate(xs) for b in xs[i + 1 :]}
    text = (f"{len(ivs)} pairwise differences over settings {', '.join(map(_num, xs))}; tolerance +-{tolerance:g} "
            "(the paper's printed range)")

    def worst(items: Sequence[tuple[tuple[float, float], Interval]]) -> tuple[tuple[float, float], Interval]:
        """The difference whose interval reaches farthest from 0."""
        return max(items, key=lambda kv: max(abs(kv[1].lo), abs(kv[1].hi)))

    defined = [(k, iv) for k, iv in ivs.items() if iv is not None and iv.defined]
    outside = [(k, iv) for k, iv in defined if iv.lo > tolerance or iv.hi < -tolerance]
    if outside:
        (a, b), iv = worst(outside)
        return Verdict(claim, f"{text}; an interval lies entirely outside", CONTRADICTED,
                       _diff(_num(b), _num(a), iv), _mean(iv))
    if len(defined) == len(ivs) and all(-tolerance <= iv.lo and iv.hi <= tolerance for _, iv in defined):
        (a, b), iv = worst(defined)
        return Verdict(claim, f"{text}; every interval inside", SUPPORTED, _diff(_num(b), _num(a), iv), _mean(iv))
    undefined = [k for k, iv in ivs.items() if iv is None or not iv.defined]
    crossing = [(k, iv) for k, iv in defined if iv.lo < -tolerance or iv.hi > tolerance]
    text += "".join([f"; {len(crossing)} interval(s) cross the tolerance" if crossing else "",
                     f"; {len(undefined)} difference(s) without an interval" if undefined else ""])
    if crossing:
        (a, b), iv = worst(crossing)
        return Verdict(claim, text, UNRESOLVED, _diff(_num(b), _num(a), iv), _mean(iv))
    a, b = undefined[0]
    return Verdict(claim, text, UNRESOLVED, _diff(_num(b), _num(a), ivs[a, b]), _mean(ivs[a, b]))


def judge_factorization(claim: str, arms: Mapping[str, Arm]) -> Verdict:
    """Residual factorization has lower FID than latent and image resizing: Rule 4 (Sec. 3.2, Fig. 2)."""
    others = [name for name in RESIZINGS if name in arms]
    if "residual" not in arms or not others:
        return Verdict(claim, f"FID measured for {', '.join(sorted(arms)) or 'no factorization'}", UNRESOLVED)
    ivs = {name: paired(arms[name], arms["residual"]) for name in others}
    evidence = "; ".join(_diff(name, "residual", iv) for name, iv in ivs.items())
    below = [n for n, iv in ivs.items() if iv is not None and iv.defined and iv.hi < 0]
    if below:
        return Verdict(claim, evidence, CONTRADICTED, _diff(below[0], "residual", ivs[below[0]]), _mean(ivs[below[0]]))
    above = [n for n, iv in ivs.items() if iv is not None and iv.defined and iv.lo > 0]
    if len(above) == len(RESIZINGS):
        weakest = min(above, key=lambda n: ivs[n].lo)  # type: ignore[union-attr]
        return Verdict(claim, evidence, SUPPORTED, _diff(weakest, "residual", ivs[weakest]), _mean(ivs[weakest]))
    open_ = [n for n in others if n not in above] or others
    return Verdict(claim, evidence + ("" if len(others) == len(RESIZINGS) else "; a resizing was not measured"),
                   UNRESOLVED, _diff(open_[0], "residual", ivs[open_[0]]), _mean(ivs[open_[0]]))


def judge_loss(claim: str, loss: Mapping[int, LossPair]) -> Verdict:
    """The scale-2 (stage 1) training loss is much lower than scale 1's, per training seed: Rule 5 (Sec. 4.1,
    Fig. 4)."""
    if not loss:
        return Verdict(claim, "no training seed with both stages of the paper's arm", UNRESOLVED)
    ratios = {seed: p.stage1 / p.stage0 for seed, p in sorted(loss.items())}
    iv = t_interval(list(ratios.values()), "training seed", len(ratios))
    evidence = "; ".join(
        f"training seed {seed}: {_num(loss[seed].stage1)} / {_num(loss[seed].stage0)} = {q:.3g} "
        f"({loss[seed].folders[1]} / {loss[seed].folders[0]})"
        for seed, q in ratios.items()
    )
    deciding = "q = " + iv.text(signed=False)
    if not iv.defined:
        return Verdict(claim, evidence, UNRESOLVED, deciding)
    if iv.hi <= MUCH_LOWER:
        return Verdict(claim, evidence, SUPPORTED, deciding)
    return Verdict(claim, evidence, CONTRADICTED if iv.lo >= 1.0 else UNRESOLVED, deciding)


def judge_speed(claim: str, pair: tuple[Timed, Timed] | None) -> Verdict:
    """MSF samples 2x faster than DiT-XL/2 at equal FID: Rule 6 (Sec. 4.2, Table 1 'Time')."""
    if pair is None:
        return Verdict(claim, "no MSF and baseline evals with FID and timing evaluated alike", UNRESOLVED)
    msf, base = pair
    if (msf.device, msf.dtype) != (base.device, base.dtype):
        where = f"{msf.device}/{msf.dtype} vs {base.device}/{base.dtype}"
        return Verdict(claim, f"timed on different devices or dtypes ({where})", UNRESOLVED)
    speedup = base.time / msf.time
    iv = paired(msf.fid, base.fid)
    margin = EQUAL_FID_MARGIN * statistics.fmean(base.fid.values.values())
    deciding, d = _diff("MSF", base.label.split(",")[0], iv), _mean(iv)
    evidence = (f"{msf.label}: {_num(msf.time)} s/64 img; {base.label}: {_num(base.time)} s/64 img ({msf.device}, "
                f"{msf.dtype}); speedup S = {speedup:.3g}; equal-FID margin m = {margin:.3g}")
    if iv is None or not iv.defined:
        return Verdict(claim, evidence, UNRESOLVED, deciding, d)
    if iv.lo > margin:
        return Verdict(claim, evidence, CONTRADICTED, deciding, d)
    if iv.hi > margin:
        return Verdict(claim, evidence + "; the interval reaches past m", UNRESOLVED, deciding, d)
    if speedup >= SPEEDUP * TIMING_SLACK:
        return Verdict(claim, evidence, SUPPORTED, deciding, d)
    return Verdict(claim, evidence, UNRESOLVED if iv.hi < 0 else CONTRADICTED, deciding, d)


def judge_all(ev: Evidence) -> list[Verdict]:
    """Every claim of the paper that our runs can speak to, in the paper's order (Secs. 3.2, 4.1, 4.2, 5)."""
    return [
        judge_factorization("Residual factorization beats latent and image resizing (Sec. 3.2, Fig. 2)",
                            ev.factorization),
        judge_loss("Scale-2 training loss is much lower than scale-1 (Sec. 4.1, Fig. 4)", ev.loss),
        judge_speed("MSF is 2x faster than DiT-XL/2 at equal FID (Sec. 4.2, Table 1)", ev.speed),
        judge_best("Best scale-1 CFG is 1.4 (Table 2)", ev.cfg_scale1, BEST_CFG_SCALE1),
        judge_flat(
            f"Scale 2 needs no CFG: FID-5K changes by <= {ev.tolerance_cfg_scale2:g} across CFG 1.0-1.4 (Table 3)",
            ev.cfg_scale2,
            ev.tolerance_cfg_scale2,
        ),
        judge_best("Scale-1 FID is best around 100-125 steps (Table 4)", ev.steps_scale1, BEST_STEPS_SCALE1),
        judge_flat(
            f"Scale 2 is robust to 10 steps: FID-5K fluctuates by <= {ev.tolerance_steps_scale2:g} over 10-100 "
            "steps (Table 5)",
            ev.steps_scale2,
            ev.tolerance_steps_scale2,
        ),
    ]
