"""Where a method's training time goes: per-stage seconds of chosen methods, repeated, in one process.

Runs the given methods (Table 1 names or Table 2 ablations) on one setting of a preset (`standard` by default) for
each seed, ``--repeat`` times each, and prints one JSON line per run: test AUC, training seconds and the
stage split (projection, sampling, offline distillation, drift, online co-distillation; or offline and
online for the baselines). The first optimiser's one-time import is paid before anything is timed, as
in `crossadapt bench paper`. Data and teachers are generated or reused under ``--work`` (the bench's layout,
so ``--work out/paper-standard`` reuses that run's).

    .venv/bin/python bench/method_times.py --work out/paper-standard --student fibinet-16 \
        --methods Scratch CrossAdapt-Sample --repeat 2
    .venv/bin/python bench/method_times.py --preset long-history --split 12:4:1:1 --rows 450000 \
        --work out/lh-split --student mlp-8 --seeds 0 1 2   # the paper's D_train : D_online of 4:1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from crossadapt.transfer.experiments.methods import run_method, score
from crossadapt.transfer.experiments.paper_bench import BenchRunner, resolve_dataset
from crossadapt.transfer.experiments.presets import PRESETS
from crossadapt.transfer.switch import model_label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="standard", choices=sorted(PRESETS))
    parser.add_argument("--setting", default=None, help="a setting of the preset (default: its main setting)")
    parser.add_argument("--student", default="fibinet-16", help="the student label of one of the setting's pairs")
    parser.add_argument("--methods", nargs="+", default=["Scratch", "CrossAdapt-Sample"])
    parser.add_argument("--rows", type=int, help="the synthetic setting's rows instead of the preset's")
    parser.add_argument("--split", help="H:T:O:T, hist:train:online:test instead of the preset's (long_history)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("out/method-times"))
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    settings = [preset.main, *preset.extra]
    names = [s.name for s in settings]
    if args.setting is not None and args.setting not in names:
        parser.error(f"--setting must be one of {names}")
    spec = next(s for s in settings if s.name == (args.setting or preset.main.name))
    try:
        spec = spec.resized(args.rows, args.split)
    except ValueError as error:
        parser.error(str(error))
    pair = next(p for p in spec.pairs if model_label(p.student) == args.student)
    args.work.mkdir(parents=True, exist_ok=True)
    runner = BenchRunner(preset, args.work, print, runs_log="method-times-runs.jsonl")
    dataset = resolve_dataset(None, spec, args.work, print)
    for seed in args.seeds:
        ctx = runner.context(dataset, pair, seed)  # the runner has paid the first optimiser's import
        for method in args.methods:
            for _ in range(args.repeat):
                outcome = run_method(method, ctx)
                print(json.dumps({
                    "setting": spec.name, "data": dataset.path.name, "student": args.student, "method": method, "seed": seed,
                    "auc": round(float(score(outcome.model, ctx.splits["test"])["auc"]), 4),
                    "train_seconds": round(outcome.train_seconds, 3),
                    "stages": {k: round(v, 3) for k, v in outcome.stage_seconds.items()},
                }), flush=True)


if __name__ == "__main__":
    main()
