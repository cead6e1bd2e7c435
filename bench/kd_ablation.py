"""What reaches the student from the teacher: quick KD ablations with paired deltas against Scratch.

Runs Scratch and CrossAdapt-Sample under several distillation settings (λ, T, the KD gate, the frozen
stage, the student's network from the teacher or not) on one setting of a `bench paper` preset (default: `smoke`'s main setting, 100k `small` rows) and
prints, per variant and student, the mean test AUC and the paired delta against Scratch (same seed, same
teacher, same data) with a 95% t-interval over seeds and a 95% paired bootstrap interval over the test
rows; every variant after the first is also paired against the first (the paper's KD on all rows). Each
line also has the median time share of Scratch's training time and the mean test PCOC (calibration).
Teachers and data are cached under ``--work`` in the layout of `crossadapt bench paper --out`;
``--setting``, ``--rows`` and ``--split`` pick another setting of the preset or resize its synthetic data.

    nice -n 10 .venv/bin/python bench/kd_ablation.py --preset smoke --seeds 0 1 2 --work out/kd-ablation
    nice -n 10 .venv/bin/python bench/kd_ablation.py --preset long-history --split 12:4:1:1 --rows 450000 \
        --seeds 0 1 2 --work out/lh4 --variants "paper (λ 0.7, T 4, KD on all rows)" "kd_gate teacher_better (default)"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from pathlib import Path

import numpy as np

from crossadapt.transfer.experiments.paper_bench import BenchRunner, resolve_dataset
from crossadapt.transfer.experiments.presets import PRESETS
from crossadapt.training import predict_proba
from crossadapt.transfer.experiments.methods import run_method
from crossadapt.transfer.experiments.paired import bootstrap_aucs, percentile_interval, seed_interval


def _test_auc(model, test) -> tuple[float, np.ndarray, float]:  # noqa: ANN001
    """Test AUC (pp), the AUC (pp) on each paired bootstrap resample of the test rows, and the PCOC (mean
    prediction over observed rate: the calibration a rollout gate reads)."""
    from crossadapt.metrics import auc

    labels, probabilities = np.asarray(test.label), predict_proba(model, test)
    pcoc = float(np.mean(probabilities) / np.mean(labels))
    return 100 * auc(labels, probabilities), 100 * bootstrap_aucs(labels, probabilities), pcoc

# name -> changes to offline.distillation (the frozen stage is `frozen_epochs`; 0 = none, joint gets 2);
# a "method" key runs that Table 2 ablation of CrossAdapt-Sample instead; an "offline" key holds changes to
# the offline section itself (e.g. reuse_teacher_network).
# Since the gate became the default, the other rows vary the gated default (λ, T, ...); "paper" is all rows.
VARIANTS: dict[str, dict] = {
    "paper (λ 0.7, T 4, KD on all rows)": {"kd_gate": "all"},
    "kd_gate teacher_better (default)": {"kd_gate": "teacher_better"},
    "λ 0 (no KD)": {"kd_weight": 0.0},
    "λ 0.3": {"kd_weight": 0.3},
    "T 1": {"temperature": 1.0},
    "no frozen stage": {"frozen_epochs": 0, "joint_epochs": 2},
    "frozen stage only": {"frozen_epochs": 1, "joint_epochs": 0},
    "w/o projection": {"method": "w/o projection"},
    "w/o sampling (all of D_train)": {"method": "w/o sampling"},
    "paper's student network (no reuse)": {"offline": {"reuse_teacher_network": False}},
}


def paired_interval(deltas: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval of paired deltas (nan half-width for one seed)."""
    interval = seed_interval(deltas)
    mean = statistics.fmean(deltas)
    return mean, math.nan if interval is None else (interval[1] - interval[0]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"some of {list(VARIANTS)}")
    parser.add_argument("--work", type=Path, default=Path("out/kd-ablation"))
    parser.add_argument("--setting", default=None, help="a setting of the preset (default: its main setting)")
    parser.add_argument("--rows", type=int, help="the synthetic main setting's rows instead of the preset's")
    parser.add_argument("--split", help="H:T:O:T, hist:train:online:test instead of the preset's (long_history)")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    settings = {s.name: s for s in (preset.main, *preset.extra)}
    if args.setting is not None and args.setting not in settings:
        parser.error(f"--setting must be one of {sorted(settings)}")
    try:
        spec = settings[args.setting or preset.main.name].resized(args.rows, args.split)
    except ValueError as error:
        parser.error(str(error))
    args.work.mkdir(parents=True, exist_ok=True)
    runner = BenchRunner(preset, args.work, print, runs_log="kd-ablation-runs.jsonl")
    dataset = resolve_dataset(None, spec, args.work, print)
    for pair in spec.pairs:
        scratch: dict[int, float] = {}
        scratch_rows: dict[int, np.ndarray] = {}
        scratch_seconds: dict[int, float] = {}
        scratch_pcoc: dict[int, float] = {}
        first: tuple[str, dict[int, float], dict[int, np.ndarray]] | None = None
        for seed in args.seeds:
            ctx = runner.context(dataset, pair, seed)
            outcome = run_method("Scratch", ctx)
            scratch[seed], scratch_rows[seed], scratch_pcoc[seed] = _test_auc(outcome.model, ctx.splits["test"])
            scratch_seconds[seed] = outcome.train_seconds
        for variant in args.variants:
            aucs: dict[int, float] = {}
            rows: dict[int, np.ndarray] = {}
            time_share: dict[int, float] = {}
            pcoc: dict[int, float] = {}
            for seed in args.seeds:
                ctx = runner.context(dataset, pair, seed)
                changes = dict(VARIANTS[variant])
                method = changes.pop("method", "CrossAdapt-Sample")
                offline = changes.pop("offline", {})
                distillation = ctx.offline.distillation.model_copy(update=changes)
                ctx = dataclasses.replace(ctx, offline=ctx.offline.model_copy(
                    update={"distillation": distillation, **offline}))
                outcome = run_method(method, ctx)
                aucs[seed], rows[seed], pcoc[seed] = _test_auc(outcome.model, ctx.splits["test"])
                time_share[seed] = outcome.train_seconds / scratch_seconds[seed]
            mean, half = paired_interval([aucs[s] - scratch[s] for s in args.seeds])
            line = {
                "student": type(pair.student).__name__,
                "variant": variant, "auc": round(statistics.fmean(aucs.values()), 2),
                "scratch_auc": round(statistics.fmean(scratch.values()), 2),
                "delta_vs_scratch": round(mean, 2), "ci95_half_width": round(half, 2),
                "rows_ci95_vs_scratch": _rows_ci(rows, scratch_rows, args.seeds),
                "per_seed_delta": {s: round(aucs[s] - scratch[s], 3) for s in args.seeds},
                "time_vs_scratch": round(statistics.median(time_share.values()), 3),
                "pcoc": round(statistics.fmean(pcoc.values()), 3),
                "scratch_pcoc": round(statistics.fmean(scratch_pcoc.values()), 3),
            }
            if first is None:
                first = (variant, aucs, rows)
            else:  # paired against the first variant too (e.g. the gate against the paper's KD)
                mean, half = paired_interval([aucs[s] - first[1][s] for s in args.seeds])
                line |= {f"delta_vs_{first[0]}": round(mean, 2), "ci95_half_width_vs_first": round(half, 2),
                         "rows_ci95_vs_first": _rows_ci(rows, first[2], args.seeds)}
            print(json.dumps(line, ensure_ascii=False))


def _rows_ci(rows: dict[int, np.ndarray], base: dict[int, np.ndarray], seeds: list[int]) -> list[float]:
    """95% paired row-bootstrap interval of the mean delta over seeds (pp)."""
    low, high = percentile_interval(np.mean([rows[s] - base[s] for s in seeds], axis=0))
    return [round(low, 2), round(high, 2)]


if __name__ == "__main__":
    main()
