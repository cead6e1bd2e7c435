"""Why CrossAdapt-Adaptive moves λ so rarely on the bench streams: its online gap trace.

Runs CrossAdapt-Adaptive on one setting of the `standard` preset (default: the strong-interaction one,
where the FiBiNET-16 student ends well above its MLP-8 teacher) and prints, per seed, the number of
online batches, the relative prequential LogLoss gap ``(L_T - L_S) / L_T`` the controller saw at the first
and last batch (its EMA; > 0 means the student is better), the onset where λ starts to fall, the final
λ, and both models' test AUC. Data and teachers are generated or reused under ``--work``, the same
layout as `crossadapt bench paper --out`, so pointing it at ``out/paper-standard`` reuses that run's.

    .venv/bin/python bench/adaptive_trace.py --work out/paper-standard --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig
from crossadapt.transfer.experiments.paper_bench import BenchRunner, resolve_dataset
from crossadapt.transfer.experiments.presets import STANDARD
from crossadapt.transfer.experiments.methods import run_method, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", default="synthetic-strong_interactions",
                        help=f"one of {[s.name for s in [STANDARD.main, *STANDARD.extra]]}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", type=Path, default=Path("out/adaptive-trace"))
    args = parser.parse_args()
    spec = next(s for s in [STANDARD.main, *STANDARD.extra] if s.name == args.setting)
    args.work.mkdir(parents=True, exist_ok=True)
    # Shares the bench's teacher cache; its own runs log leaves the bench's runs.jsonl as it was.
    runner = BenchRunner(STANDARD, args.work, print, runs_log="adaptive-trace-runs.jsonl")
    dataset = resolve_dataset(None, spec, args.work, print)
    pair = spec.pairs[-1]
    onset = AdaptiveKDConfig().gap_onset
    for seed in args.seeds:
        ctx = runner.context(dataset, pair, seed)
        splits = ctx.splits
        teacher_metrics = runner.teacher(dataset, pair.teacher, seed)[1]
        outcome = run_method("CrossAdapt-Adaptive", ctx)
        trace = outcome.details["online_kd_weight_trace"]
        print(json.dumps({
            "setting": spec.name, "seed": seed, "online_batches": len(trace),
            "gap_first": round(trace[0][1], 5), "gap_last": round(trace[-1][1], 5), "gap_onset": onset,
            "lambda_last": trace[-1][2], "prequential_logloss": outcome.details["prequential_logloss"],
            "student_test_auc": round(float(score(outcome.model, splits["test"])["auc"]), 4),
            "teacher_test_auc": round(float(teacher_metrics["auc"]), 4),
        }))


if __name__ == "__main__":
    main()
