"""What reaches the student from the teacher: quick KD ablations with paired deltas against Scratch.

Runs Scratch and CrossAdapt-Sample under several distillation settings (λ, T, the KD gate, the frozen
stage) on one setting of a `bench paper` preset (default: `smoke`'s main setting, 100k `small` rows) and
prints, per variant and student, the mean test AUC and the paired delta against Scratch (same seed, same
teacher, same data) with a 95% t-interval over seeds. Teachers and data are cached under ``--work`` in
the layout of `crossadapt bench paper --out`.

    nice -n 10 .venv/bin/python bench/kd_ablation.py --preset smoke --seeds 0 1 2 --work out/kd-ablation
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from pathlib import Path

from crossadapt.transfer.experiments.paper_bench import BenchRunner, resolve_dataset
from crossadapt.transfer.experiments.presets import PRESETS
from crossadapt.transfer.experiments.methods import run_method, score

# name -> changes to offline.distillation (the frozen stage is `frozen_epochs`; 0 = none, joint gets 2);
# a "method" key runs that Table 2 ablation of CrossAdapt-Sample instead.
VARIANTS: dict[str, dict] = {
    "paper (λ 0.7, T 4)": {},
    "λ 0 (no KD)": {"kd_weight": 0.0},
    "λ 0.3": {"kd_weight": 0.3},
    "T 1": {"temperature": 1.0},
    "no frozen stage": {"frozen_epochs": 0, "joint_epochs": 2},
    "kd_gate teacher_better": {"kd_gate": "teacher_better"},
    "w/o projection": {"method": "w/o projection"},
    "w/o sampling (all of D_train)": {"method": "w/o sampling"},
}

# Two-sided 97.5% quantiles of Student's t for n - 1 = 1..9 degrees of freedom.
T_975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262]


def paired_interval(deltas: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval of paired deltas (nan half-width for one seed)."""
    mean = statistics.fmean(deltas)
    if len(deltas) < 2:
        return mean, math.nan
    return mean, T_975[min(len(deltas) - 2, len(T_975) - 1)] * statistics.stdev(deltas) / math.sqrt(len(deltas))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"some of {list(VARIANTS)}")
    parser.add_argument("--work", type=Path, default=Path("out/kd-ablation"))
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    spec = preset.main
    args.work.mkdir(parents=True, exist_ok=True)
    runner = BenchRunner(preset, args.work, print, runs_log="kd-ablation-runs.jsonl")
    dataset = resolve_dataset(None, spec, args.work, print)
    for pair in spec.pairs:
        scratch: dict[int, float] = {}
        for seed in args.seeds:
            ctx = runner.context(dataset, pair, seed)
            scratch[seed] = 100 * float(score(run_method("Scratch", ctx).model, ctx.splits["test"])["auc"])
        for variant in args.variants:
            aucs: dict[int, float] = {}
            for seed in args.seeds:
                ctx = runner.context(dataset, pair, seed)
                changes = dict(VARIANTS[variant])
                method = changes.pop("method", "CrossAdapt-Sample")
                distillation = ctx.offline.distillation.model_copy(update=changes)
                ctx = dataclasses.replace(ctx, offline=ctx.offline.model_copy(update={"distillation": distillation}))
                aucs[seed] = 100 * float(score(run_method(method, ctx).model, ctx.splits["test"])["auc"])
            mean, half = paired_interval([aucs[s] - scratch[s] for s in args.seeds])
            print(json.dumps({
                "student": type(pair.student).__name__,
                "variant": variant, "auc": round(statistics.fmean(aucs.values()), 2),
                "scratch_auc": round(statistics.fmean(scratch.values()), 2),
                "delta_vs_scratch": round(mean, 2), "ci95_half_width": round(half, 2),
                "per_seed_delta": {s: round(aucs[s] - scratch[s], 3) for s in args.seeds},
            }, ensure_ascii=False))


if __name__ == "__main__":
    main()
