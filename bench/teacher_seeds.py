"""Teacher stability across seeds: trains the paper's MLP-8 [64,32,4] teacher on the `small` synthetic
preset for several seeds and model overrides, and prints test AUC/LogLoss per run.

Shows the collapse noted in bench/README.md: with embedding lr 0.1 some seeds end as a constant
predictor (AUC 0.5000); `batch_norm: true` avoids it at a cost on healthy seeds.

    .venv/bin/python bench/teacher_seeds.py                       # seeds 0-4, plain and batch-norm
    .venv/bin/python bench/teacher_seeds.py --seeds 1 2 --override '{"dropout": 0.1}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from crossadapt.data import prepare_dataset, synthetic_preset
from crossadapt.training import TrainConfig, train_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--override", action="append", default=None,
                        help="JSON object merged into the model config (repeatable; default: none and batch_norm)")
    args = parser.parse_args()
    overrides = [json.loads(o) for o in args.override] if args.override else [{}, {"batch_norm": True}]
    with tempfile.TemporaryDirectory() as tmp:
        dataset = prepare_dataset(synthetic_preset("small", rows=args.rows, seed=0), Path(tmp) / "small")
        for override in overrides:
            for seed in args.seeds:
                model = {"architecture": "mlp", "embedding_dim": 8, "hidden_units": [64, 32, 4]} | override
                config = TrainConfig(batch_size=512, epochs=1, seed=seed, progress=False)
                result = train_teacher(dataset, model, config)
                print(json.dumps({"seed": seed, "override": override, "auc": round(result.metrics["auc"], 4),
                                  "logloss": round(result.metrics["logloss"], 4)}))


if __name__ == "__main__":
    main()
