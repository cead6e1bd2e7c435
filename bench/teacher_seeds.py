"""Teacher stability across seeds: trains the paper's MLP-8 [64,32,4] teacher on the `small` synthetic
preset for several seeds, starting either at logit 0 (p = 0.5) or at the label's base rate (what
`train_teacher` does), and prints test AUC/LogLoss per run.

Shows the collapse explained in `CTRModel.set_base_rate`: started at p = 0.5, seeds 1 and 2 end as
constant predictors (AUC 0.5000, every unit of the width-4 layer dead); started at the base rate, none do.

    .venv/bin/python bench/teacher_seeds.py                        # seeds 0-4, both starts
    .venv/bin/python bench/teacher_seeds.py --seeds 1 2 --override '{"batch_norm": true}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from crossadapt.data import prepare_dataset, synthetic_preset
from crossadapt.models import build_model, parse_model_config
from crossadapt.training import TrainConfig, Trainer, positive_rate, seed_everything, teacher_training_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--override", default="{}", help="JSON object merged into the model config")
    args = parser.parse_args()
    model_config = parse_model_config(
        {"architecture": "mlp", "embedding_dim": 8, "hidden_units": [64, 32, 4]} | json.loads(args.override)
    )
    with tempfile.TemporaryDirectory() as tmp:
        dataset = prepare_dataset(synthetic_preset("small", rows=args.rows, seed=0), Path(tmp) / "small")
        config = TrainConfig(batch_size=512, epochs=1, progress=False)
        fit_rows, valid = teacher_training_rows(dataset, config.validation_fraction)
        for start in ("zero", "base-rate"):
            for seed in args.seeds:
                seed_everything(seed)
                base_rate = positive_rate(fit_rows) if start == "base-rate" else None
                model = build_model(model_config, dataset.feature_spec, base_rate=base_rate)
                trainer = Trainer(model, config.model_copy(update={"seed": seed}))
                trainer.fit(fit_rows)  # no validation: a constant predictor is shown, not refused
                metrics = trainer.evaluate(dataset.split("test"))
                print(json.dumps({"start": start, "seed": seed, "auc": round(metrics["auc"], 4),
                                  "logloss": round(metrics["logloss"], 4),
                                  "prediction_std": round(metrics["prediction_std"], 5)}), flush=True)


if __name__ == "__main__":
    main()
