"""Does "median call time x steps" predict the whole sampler's time? Both speed methods at the paper's sizes with the
step counts cut down.

    .venv/bin/python benchmarks/speed_methods.py [--steps 4] [--threads 1] [--batch 2] [--device cpu]

For DiT-XL/2 (DDPM, CFG 1.5) and MSF (stage 1 CFG 1.4, stage 2 half the steps without CFG), random weights, each
model's speed plan (ablations/engine/families.py) with only the step counts replaced; runs ``speed_benchmark`` with
method "forward" and "sample" and prints seconds per image of both and their ratio (1.0: the "forward" estimate is
exact; above 1: the sampler's own work, noise, solver arithmetic and the factorization, costs that much extra).
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from ablations.engine.families import FAMILIES
from ablations.engine.jobs import speed_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="stage-1 / DiT-XL/2 steps (stage 2 gets half)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print("| model | steps x CFG | call time x steps (s/img) | whole sampler (s/img) | ratio |")
    print("|---|---|---:|---:|---:|")
    for model in ("dit_xl2", "msf"):
        plan = [dataclasses.replace(st, steps=max(1, args.steps // (2 if i else 1)))
                for i, st in enumerate(FAMILIES[model].speed_plan)]
        seconds = {}
        for method in ("forward", "sample"):
            m = speed_benchmark(FAMILIES[model], tuple(plan), device, torch.float32, "sdpa", "none", method, args.batch,
                                log=lambda line: print(f"  {line}", flush=True))
            seconds[method] = m["sec_per_image"]
        steps = " + ".join(f"{st.steps}x{st.cfg:g}" for st in plan)
        print(f"| {model} | {steps} | {seconds['forward']:.3g} | {seconds['sample']:.3g} | "
              f"{seconds['sample'] / seconds['forward']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
