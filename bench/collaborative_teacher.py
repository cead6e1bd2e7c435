"""What collaborative co-distillation does to the TEACHER: its test AUC after CrossAdapt-Sample's online stage
(the teacher learns from the labels) against after CrossAdapt-Collaborative's (it also distills from the
student where the student is better), paired by seed, with a 95% t-interval over seeds. The bench tables
score students only; this scores the co-evolved teachers of the same runs. Data and teachers are cached
under ``--work`` in the layout of `crossadapt bench paper --out`.

    nice -n 10 .venv/bin/python bench/collaborative_teacher.py --preset related --seeds 0 1 2 --work out/related
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crossadapt.transfer.experiments.methods import run_method, score
from crossadapt.transfer.experiments.paired import seed_interval
from crossadapt.transfer.experiments.paper_bench import BenchRunner, resolve_dataset
from crossadapt.transfer.experiments.presets import PRESETS
from crossadapt.transfer.switch import model_label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="related", choices=sorted(PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("out/related"))
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    args.work.mkdir(parents=True, exist_ok=True)
    runner = BenchRunner(preset, args.work, print, runs_log="collaborative-teacher-runs.jsonl")
    print("| Setting | Pair | Teacher before | after CA-Sample | after CA-Collaborative | Δ (pp) | Seeds 95% CI |")
    print("|---|---|---:|---:|---:|---:|---|")
    for spec in [preset.main, *preset.extra]:
        dataset = resolve_dataset(None, spec, args.work, print)
        test = dataset.split("test")
        for pair in spec.pairs:
            before, plain, collaborative = [], [], []
            for seed in args.seeds:
                ctx = runner.context(dataset, pair, seed)
                before.append(score(ctx.teacher, test)["auc"])
                plain.append(score(run_method("CrossAdapt-Sample", ctx).teacher, test)["auc"])
                collaborative.append(score(run_method("CrossAdapt-Collaborative", ctx).teacher, test)["auc"])
            deltas = [100 * (c - p) for c, p in zip(collaborative, plain)]
            interval = seed_interval(deltas)
            mean = lambda values: 100 * sum(values) / len(values)  # noqa: E731
            ci = f"[{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else "–"
            print(f"| {spec.name} | {model_label(pair.teacher)}→{model_label(pair.student)} | {mean(before):.2f} | "
                  f"{mean(plain):.2f} | {mean(collaborative):.2f} | {sum(deltas) / len(deltas):+.2f} | {ci} |")


if __name__ == "__main__":
    main()
