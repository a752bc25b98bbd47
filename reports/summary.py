"""The summary a reader wants first: which claims held, which did not, which could not be resolved, and how this
run's scale differs from the paper's, every difference read from the run folders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reports.claims import CONTRADICTED, SUPPORTED, UNRESOLVED, Verdict
from reports.render import Block, Bullets
from reports.runs import AUTOENCODER_FLOOR, REAL_FLOOR, Group, Run, anchor_group, seeds_text
from reports.tables import MISSING, Table, autoencoder_share, fmt, value_text

PAPER_SCALE = {  # the paper's setup (Secs. 4, 4.1, 4.2; Table 1 caption)
    "dataset": "ImageNet 2012, 256x256, 1000 classes",
    "features": "Inception-V3 (ADM's evaluation scripts)",
    "samples": "50K per FID (Table 1); 5K (FID-5K, Tables 2-5)",
    "reference": "ADM's ImageNet reference batch",
    "scales": "2 scales: 192 and 256 px (VAE factor 8)",
    "energy": "not reported",
    "params": "767.1M (435.9M + 331.2M)",
    "training": "400k + 250k iterations at batch 2560",
    "seeds": "one run per number (no spread reported)",
    "timing": "A800 GPU, batch 64",
}


def _values(items: Sequence[Any]) -> str:
    """Distinct values as 'a / b', MISSING when none."""
    distinct = list(dict.fromkeys(str(x) for x in items if x is not None))
    return " / ".join(distinct) or MISSING


def energy_shares(trains: Sequence[Run], caches: Mapping[str, Run]) -> list[float] | None:
    """The share of the latent's energy each scale's target holds (Algorithm 1), from the target cache the paper's
    arm trained on: RMS_i^2 x h_i^2 over the sum (the channels are the same at every scale)."""
    for r in trains:
        cache = next((caches[name] for role, name in sorted(r.deps.items())
                      if role.startswith("cache") and name in caches), None)
        m = cache.metrics if cache is not None else None
        if m and m.get("target_rms") and cache is not None:
            sizes = cache.spec["factorization"]["scales"]
            energy = [rms**2 * h**2 for rms, h in zip(m["target_rms"], sizes, strict=True)]
            return [e / sum(energy) for e in energy]
    return None


def scale_table(groups: Sequence[Group], msf: Group | None, trains: Sequence[Run],
                caches: Mapping[str, Run] | None = None) -> Table:
    """This run's setup beside the paper's: dataset, feature network, sample counts, sizes, training, seeds
    (Secs. 4, 4.1, 4.2)."""
    models = [g for g in groups if g.anchor is None]
    specs = [r.spec for g in models for r in g.runs[:1]]
    data = [s.get("data") or {} for s in specs]
    s = msf.setting if msf else {}
    params = msf.stat("params_m") if msf else None
    steps: dict[int, int] = {}  # stage -> training steps (equal for every training seed)
    for r in trains:
        steps.setdefault(int((r.metrics or {})["stage"]), int((r.metrics or {})["steps"]))
    batch = _values([(r.spec.get("train") or {}).get("batch_size") for r in trains])
    training = f"{' + '.join(str(v) for _, v in sorted(steps.items()))} steps at batch {batch}" if steps else MISSING
    rows = [
        ["Dataset", PAPER_SCALE["dataset"], _values([f"{g.setting['dataset']}" for g in models]) + ", "
         + _values([f"{d.get('image_size')}x{d.get('image_size')}, {d.get('num_classes')} classes" for d in data])],
        ["Feature network of FID / IS / precision / recall", PAPER_SCALE["features"],
         _values([f"{g.setting['feature_extractor']} (world {g.setting['world']})" for g in models])],
        ["Generated samples per FID", PAPER_SCALE["samples"], _values([g.setting["n_samples"] for g in models])],
        ["Reference images", PAPER_SCALE["reference"], _values([g.setting["n_ref"] for g in models])],
        ["MSF latent scales", PAPER_SCALE["scales"],
         f"{len(s['scales'])} scales: latents {value_text('scales', s['scales'])}" if s else MISSING],
        ["Latent energy per scale (Algorithm 1 targets)", PAPER_SCALE["energy"],
         " / ".join(f"{100 * e:.1f}%" for e in shares) if (shares := energy_shares(trains, caches or {})) else MISSING],
        ["MSF parameters", PAPER_SCALE["params"], f"{fmt(params.mean, 'params_m')}M" if params else MISSING],
        ["MSF training per stage", PAPER_SCALE["training"], training],
        ["Runs per number", PAPER_SCALE["seeds"], seeds_text(msf.pairs) if msf else MISSING],
        ["Sampling timed on", PAPER_SCALE["timing"], f"{s['device']}, {s['dtype']}" if s else MISSING],
    ]
    return Table("Scale", "This run's setup beside the paper's", "Ours: read from the run folders (the MSF row of "
                 "Table 1 and its training runs); the paper's from its Secs. 4-4.2 and Table 1.",
                 ["Aspect", "Paper", "Ours"], rows)


OFFICIAL_INCEPTION = "6726825d"  # sha256 prefix of torch-fidelity's pt_inception-2015-12-05-6726825d.pth (ADM's)


def inception_note(groups: Sequence[Group]) -> list[str]:
    """A warning when Inception features come from other weights than the official file (e.g. a rehearsal's random
    weights): their FIDs are not on the paper's scale."""
    labels = {str(g.setting["feature_extractor"]) for g in groups}
    other = sorted(x for x in labels if x.startswith("inception-v3-compat@")
                   and not x.split("@", 1)[1].startswith(OFFICIAL_INCEPTION))
    if not other:
        return []
    return [f"Inception world with weights {', '.join(other)}: not the official Inception weights (torch-fidelity's "
            f"pt_inception-2015-12-05, sha256 {OFFICIAL_INCEPTION}...), e.g. a rehearsal's random weights. These "
            "numbers prove the path only; they are not on the paper's scale."]


def share_summary(msf: Group | None, groups: Sequence[Group]) -> list[str]:
    """The floors beside the paper's MSF arm, and the autoencoder's share of its FID above the real floor."""
    share = autoencoder_share(msf, groups)
    if msf is None or share is None:
        return []
    fids = [g.stat("fid") if g is not None else None
            for g in (msf, *(anchor_group(groups, a, msf.setting) for a in (REAL_FLOOR, AUTOENCODER_FLOOR)))]
    model, real, coded = (MISSING if st is None else fmt(st.mean, "fid") for st in fids)
    floors = (f"MSF(cfg=1.4) scores FID {model}, held-out real images {real} and their autoencoder reconstructions "
              f"{coded}")
    if share > 0.5:
        return [f"{floors}: the autoencoder's floor is {100 * share:.0f}% of MSF's FID above the real floor, so these "
                "numbers measure the autoencoder more than the diffusion model."]
    return [f"{floors}: the autoencoder's floor is {100 * share:.0f}% of MSF's FID above the real floor; the rest is "
            "the diffusion model's."]


def summary_blocks(verdicts: Sequence[Verdict], scale: Table, notes: Sequence[str] = ()) -> list[Block]:
    """What held, what did not, what could not be resolved, then the scale table."""

    def items(verdict: str) -> list[str]:
        """'claim: deciding difference' (or the evidence when there is none) of every claim with this verdict."""
        return [f"{v.claim}: {v.evidence if v.interval == MISSING else v.interval}" for v in verdicts
                if v.verdict == verdict]

    return [
        *notes,
        "Verdicts from paired differences of the arms each claim compares, with 95% Student-t intervals (rules in "
        "Claims). They speak about this run's scale only: see how it differs from the paper's below.",
        Bullets("Held at this scale (supported)", items(SUPPORTED)),
        Bullets("Did not hold at this scale (contradicted)", items(CONTRADICTED)),
        Bullets("Could not be resolved at this scale", items(UNRESOLVED)),
        scale,
    ]
