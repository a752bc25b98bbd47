"""The paper's claims, each judged against our measurements with explicit rules (MSF Secs. 4.1, 4.2, 5; Tables 1-5).

A verdict is one of ``supported``, ``contradicted`` or ``not resolvable at this preset``. Differences are judged against
the spread over seeds: a difference counts only when it exceeds ``NOISE_K`` times the pooled standard deviation of
the seeds, and a setting measured with a single seed has no spread, so nothing about it is resolvable. The rules are
in ``RULES`` and printed in every report.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
UNRESOLVED = "not resolvable at this preset"

NOISE_K = 2.0  # a difference is real only when |delta| > NOISE_K * pooled seed std
MUCH_LOWER = 0.5  # "much lower" loss: at most half
SPEEDUP = 2.0  # "2x faster"
TIMING_SLACK = 0.9  # accept a measured speedup >= SPEEDUP * TIMING_SLACK (timing jitter of a shared machine)
BEST_CFG_SCALE1 = (1.4,)  # Table 2 caption: "The FID achieves the best results at 1.4"
BEST_STEPS_SCALE1 = (100.0, 125.0)  # Table 4 caption: "better results at 100 and 125 sampling steps"
RESIZINGS = ("latent_resize", "image_resize")  # Fig. 2 (a), (b)

RULES = (
    f"Seed spread: s = pooled sample std over seeds of the settings compared; a difference d is resolved only when "
    f"|d| > {NOISE_K:g} s. A setting with one seed has no spread: claims that need it are not resolvable.",
    "Flat claims (Tables 3, 5): range r = max - min of the mean FID across the swept settings; supported when "
    f"r <= max(paper's printed range, {NOISE_K:g} s), else contradicted.",
    "Best-setting claims (Tables 2, 4): d = (best mean FID outside the claimed settings) - (best mean FID inside "
    "them); "
    f"supported when d > {NOISE_K:g} s, contradicted when d < -{NOISE_K:g} s, else not resolvable; not resolvable "
    "when a claimed setting was not measured.",
    f"Factorization (Fig. 2): d = FID(resizing) - FID(residual) for each of {', '.join(RESIZINGS)} at otherwise equal "
    f"settings; supported when d > {NOISE_K:g} s for both, contradicted when d < -{NOISE_K:g} s for either.",
    f"Loss (Fig. 4): ratio q = mean final_loss_ema100 of stage 1 (paper's scale 2) / stage 0 (scale 1) over MSF "
    f"train nodes; supported when q <= {MUCH_LOWER:g}, contradicted when q >= 1, else not resolvable.",
    f"Speed (Table 1): same device and dtype required; contradicted when MSF's FID exceeds the baseline's by more than "
    f"{NOISE_K:g} s; otherwise with speedup S = time(baseline) / time(MSF) per 64 images: supported when "
    f"S >= {SPEEDUP * TIMING_SLACK:g} ({SPEEDUP:g}x with {100 * (1 - TIMING_SLACK):.0f}% timing slack), contradicted "
    "when FIDs are equal within the spread and S is below that, not resolvable when MSF is better but not that fast.",
)


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds of one measured quantity (harness)."""

    mean: float
    std: float  # nan when n < 2
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """Summarise the per-seed values of one setting (harness)."""
        if not values:
            raise ValueError("Stat.of needs at least one value")
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return cls(statistics.fmean(values), std, len(values))


@dataclass(frozen=True)
class Verdict:
    """One claim of the paper, our evidence and the verdict (harness)."""

    claim: str
    evidence: str
    verdict: str


@dataclass(frozen=True)
class Timed:
    """FID and sampling time per 64 images of one model setting, for the speed claim (Table 1)."""

    label: str
    fid: Stat
    time: Stat
    device: str
    dtype: str


@dataclass
class Evidence:
    """Everything the claims are judged on, extracted from run folders by the report builder (harness)."""

    paper_range_cfg_scale2: float  # Table 3's printed range (0.03)
    paper_range_steps_scale2: float  # Table 5's printed range (0.05)
    cfg_scale1: dict[float, Stat] = field(default_factory=dict)  # Table 2: FID by cfg[0]
    cfg_scale2: dict[float, Stat] = field(default_factory=dict)  # Table 3: FID by cfg[1]
    steps_scale1: dict[float, Stat] = field(default_factory=dict)  # Table 4: FID by steps[0]
    steps_scale2: dict[float, Stat] = field(default_factory=dict)  # Table 5: FID by steps[1]
    factorization_fid: dict[str, Stat] = field(default_factory=dict)  # FID by factorization, other settings equal
    stage_loss: dict[int, list[float]] = field(default_factory=dict)  # stage -> final_loss_ema100 of MSF train nodes
    speed: tuple[Timed, Timed] | None = None  # (MSF, baseline) at the same preset, device and dtype


def pooled_std(stats: Sequence[Stat]) -> float:
    """Pooled sample std over seeds, sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)); nan if any setting has one seed."""
    if not stats or any(s.n < 2 for s in stats):
        return math.nan
    dof = sum(s.n - 1 for s in stats)
    return math.sqrt(sum((s.n - 1) * s.std**2 for s in stats) / dof)


def _num(x: float) -> str:
    """A setting or FID in evidence text: up to 4 significant digits (harness)."""
    return f"{x:.4g}"


def _spread(s: float) -> str:
    """The seed-spread clause of an evidence line (harness)."""
    return f"pooled seed std s = {s:.3g}, {NOISE_K:g}s = {NOISE_K * s:.3g}"


def _series(series: Mapping[float, Stat]) -> str:
    """'x: mean (n=k)' for each setting, in order (harness)."""
    return ", ".join(f"{_num(x)}: {_num(st.mean)} (n={st.n})" for x, st in sorted(series.items()))


def judge_flat(claim: str, series: Mapping[float, Stat], paper_range: float) -> Verdict:
    """A claim that FID does not change across a sweep (Tables 3, 5)."""
    if len(series) < 2:
        return Verdict(claim, f"fewer than 2 settings measured ({_series(series) or 'none'})", UNRESOLVED)
    s = pooled_std(list(series.values()))
    means = [st.mean for st in series.values()]
    r = max(means) - min(means)
    text = f"FID by setting {_series(series)}; range {r:.3g}"
    if math.isnan(s):
        return Verdict(claim, f"{text}; a setting has one seed, no spread", UNRESOLVED)
    tol = max(paper_range, NOISE_K * s)
    text = f"{text}; {_spread(s)}; tolerance max({paper_range:g}, {NOISE_K:g}s) = {tol:.3g}"
    return Verdict(claim, text, SUPPORTED if r <= tol else CONTRADICTED)


def judge_best(claim: str, series: Mapping[float, Stat], best: Sequence[float]) -> Verdict:
    """A claim that FID is lowest at the given settings (Tables 2, 4)."""
    inside = {x: st for x, st in series.items() if any(math.isclose(x, b) for b in best)}
    outside = {x: st for x, st in series.items() if x not in inside}
    if not inside or not outside:
        what = "claimed setting(s) " + "/".join(map(_num, best)) if not inside else "no other setting"
        return Verdict(claim, f"{what} not measured ({_series(series) or 'none'})", UNRESOLVED)
    s = pooled_std(list(series.values()))
    d = min(st.mean for st in outside.values()) - min(st.mean for st in inside.values())
    text = f"FID by setting {_series(series)}; best outside minus best inside d = {d:.3g}"
    if math.isnan(s):
        return Verdict(claim, f"{text}; a setting has one seed, no spread", UNRESOLVED)
    return Verdict(claim, f"{text}; {_spread(s)}", _signed(d, s))


def _signed(d: float, s: float) -> str:
    """Supported if d > NOISE_K s, contradicted if d < -NOISE_K s, else not resolvable (harness)."""
    if d > NOISE_K * s:
        return SUPPORTED
    return CONTRADICTED if d < -NOISE_K * s else UNRESOLVED


def judge_factorization(claim: str, fids: Mapping[str, Stat]) -> Verdict:
    """Residual factorization has lower FID than latent and image resizing (Sec. 3.2, Fig. 2)."""
    others = {name: fids[name] for name in RESIZINGS if name in fids}
    if "residual" not in fids or not others:
        return Verdict(claim, f"FID measured for {', '.join(sorted(fids)) or 'no factorization'}", UNRESOLVED)
    res = fids["residual"]
    s = pooled_std([res, *others.values()])
    deltas = {name: st.mean - res.mean for name, st in others.items()}
    text = f"FID residual {_num(res.mean)} (n={res.n}); " + ", ".join(
        f"{name} {_num(others[name].mean)} (d = {d:.3g})" for name, d in deltas.items()
    )
    if math.isnan(s):
        return Verdict(claim, f"{text}; a setting has one seed, no spread", UNRESOLVED)
    verdicts = {_signed(d, s) for d in deltas.values()}
    if CONTRADICTED in verdicts:
        return Verdict(claim, f"{text}; {_spread(s)}", CONTRADICTED)
    complete = verdicts == {SUPPORTED} and len(others) == len(RESIZINGS)
    return Verdict(claim, f"{text}; {_spread(s)}", SUPPORTED if complete else UNRESOLVED)


def judge_loss(claim: str, stage_loss: Mapping[int, Sequence[float]]) -> Verdict:
    """The scale-2 (stage 1) training loss is much lower than scale 1's (Sec. 4.1, Fig. 4)."""
    if not stage_loss.get(0) or not stage_loss.get(1):
        return Verdict(claim, f"train nodes for stages {sorted(stage_loss) or 'none'}; need stages 0 and 1", UNRESOLVED)
    l0, l1 = statistics.fmean(stage_loss[0]), statistics.fmean(stage_loss[1])
    q = l1 / l0
    text = (
        f"final_loss_ema100 stage 0 {_num(l0)} ({len(stage_loss[0])} node(s)), stage 1 {_num(l1)} "
        f"({len(stage_loss[1])} node(s)); ratio q = {q:.3g}"
    )
    if q <= MUCH_LOWER:
        return Verdict(claim, text, SUPPORTED)
    return Verdict(claim, text, CONTRADICTED if q >= 1.0 else UNRESOLVED)


def judge_speed(claim: str, pair: tuple[Timed, Timed] | None) -> Verdict:
    """MSF samples 2x faster than DiT-XL/2 at equal FID (Sec. 4.2, Table 1 'Time')."""
    if pair is None:
        return Verdict(claim, "no MSF and baseline evals with FID and timing at the same preset", UNRESOLVED)
    msf, base = pair
    if (msf.device, msf.dtype) != (base.device, base.dtype):
        where = f"{msf.device}/{msf.dtype} vs {base.device}/{base.dtype}"
        return Verdict(claim, f"timed on different devices or dtypes ({where})", UNRESOLVED)
    speedup = base.time.mean / msf.time.mean
    d = msf.fid.mean - base.fid.mean
    s = pooled_std([msf.fid, base.fid])
    text = (
        f"{msf.label}: FID {_num(msf.fid.mean)}, {_num(msf.time.mean)} s/64 img; {base.label}: FID "
        f"{_num(base.fid.mean)}, {_num(base.time.mean)} s/64 img ({msf.device}, {msf.dtype}); speedup S = "
        f"{speedup:.3g}, FID difference {d:.3g}"
    )
    if math.isnan(s):
        return Verdict(claim, f"{text}; a setting has one seed, no spread", UNRESOLVED)
    text = f"{text}; {_spread(s)}"
    if d > NOISE_K * s:
        return Verdict(claim, text, CONTRADICTED)
    if speedup >= SPEEDUP * TIMING_SLACK:
        return Verdict(claim, text, SUPPORTED)
    return Verdict(claim, text, UNRESOLVED if d < -NOISE_K * s else CONTRADICTED)


def judge_all(ev: Evidence) -> list[Verdict]:
    """Every claim of the paper that our runs can speak to, in the paper's order (Secs. 3.2, 4.1, 4.2, 5)."""
    return [
        judge_factorization(
            "Residual factorization beats latent and image resizing (Sec. 3.2, Fig. 2)", ev.factorization_fid
        ),
        judge_loss("Scale-2 training loss is much lower than scale-1 (Sec. 4.1, Fig. 4)", ev.stage_loss),
        judge_speed("MSF is 2x faster than DiT-XL/2 at equal FID (Sec. 4.2, Table 1)", ev.speed),
        judge_best("Best scale-1 CFG is 1.4 (Table 2)", ev.cfg_scale1, BEST_CFG_SCALE1),
        judge_flat(
            f"Scale 2 needs no CFG: FID-5K changes by <= {ev.paper_range_cfg_scale2:g} across CFG 1.0-1.4 (Table 3)",
            ev.cfg_scale2,
            ev.paper_range_cfg_scale2,
        ),
        judge_best("Scale-1 FID is best around 100-125 steps (Table 4)", ev.steps_scale1, BEST_STEPS_SCALE1),
        judge_flat(
            f"Scale 2 is robust to 10 steps: FID-5K fluctuates by <= {ev.paper_range_steps_scale2:g} over 10-100 "
            "steps (Table 5)",
            ev.steps_scale2,
            ev.paper_range_steps_scale2,
        ),
    ]
