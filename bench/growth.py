"""A vocabulary that grows with the stream: prequential AUC on the online rows whose user id is new.

Per seed: a dataset is prepared from a first period of ``--users`` users (vocabulary version 1); an online
day in which 30% of the users are new (``--new-share``) is appended with growth
(``append_split(..., growth=GrowthConfig(min_count))``: a new user seen ``min_count`` times gets an id,
version 2). A teacher (MLP-8) trained on hist ∪ train of version 1 is projected into a student (MLP-4), and
both co-distil over the online day (``online.grow_vocabulary``) twice from the same start: with growth (new
rows for the new users) and without (they read as ``<UNK>``). The figure is the student's prequential AUC
(predictions taken before it trains on each batch) on the online rows whose user is new in the online day,
and the paired difference grown − ``<UNK>`` with a 95% t-interval over seeds.

    nice -n 10 .venv/bin/python bench/growth.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from crossadapt.data import DatasetSchema, PrepareConfig, PreparedDataset, SplitArrays, append_split, prepare_dataset
from crossadapt.data.growth import GrowthConfig
from crossadapt.metrics import auc
from crossadapt.models import build_model, parse_model_config
from crossadapt.training import Trainer, TrainConfig, positive_rate, seed_everything
from crossadapt.transfer.online.codistillation import OnlineCoDistillConfig, build_codistiller
from crossadapt.transfer.projection import project_model_embeddings

from kd_ablation import paired_interval  # bench/ is the script's folder: one t-interval for every bench

SCHEMA = DatasetSchema(label="y", timestamp="t", categorical=["user", "item"], numerical=["x"])
TEACHER = parse_model_config({"architecture": "mlp", "embedding_dim": 8, "hidden_units": [32, 16]})
STUDENT = parse_model_config({"architecture": "mlp", "embedding_dim": 4, "hidden_units": [32, 16]})
ITEMS = 50


def _day(users: np.ndarray, effect: np.ndarray, item_effect: np.ndarray, rows: int, start: int,
         rng: np.random.Generator) -> pa.Table:
    """``rows`` impressions of ``users`` (uniform) on ITEMS items; the click depends on user, item and x."""
    user = rng.choice(users, rows)
    item = rng.integers(0, ITEMS, rows)
    x = rng.standard_normal(rows)
    p = 1.0 / (1.0 + np.exp(-(effect[user] + item_effect[item] + 0.4 * x - 1.0)))
    return pa.table({"t": np.arange(start, start + rows), "user": np.char.add("u", user.astype(str)),
                     "item": np.char.add("i", item.astype(str)), "x": x,
                     "y": (rng.random(rows) < p).astype(np.int64)})


def _new_id_auc(teacher, student, online: SplitArrays, new_rows: np.ndarray, grow: bool, seed: int) -> float:
    config = OnlineCoDistillConfig(batch_size=256, teacher_update_interval=10, window_batches=10, num_threads=1,
                                   grow_vocabulary=grow, seed=seed, projection_seed=seed)
    distiller = build_codistiller(copy.deepcopy(teacher), copy.deepcopy(student), config)
    distiller.consume(online)
    distiller.finish()
    labels, logits, _ = distiller.recorder.logits()
    return auc(labels[new_rows], logits[new_rows])


def measure(seed: int, users: int, new_share: float, period_rows: int, online_rows: int, min_count: int,
            user_std: float, folder: Path) -> dict[str, float]:
    """Grown and ``<UNK>`` prequential AUC on the new users' online rows for one seed."""
    rng = np.random.default_rng(seed)
    new_users = round(users * new_share / (1.0 - new_share))
    effect, item_effect = rng.normal(0.0, user_std, users + new_users), rng.normal(0.0, 0.5, ITEMS)
    old, everyone = np.arange(users), np.arange(users + new_users)
    dataset = prepare_dataset(_day(old, effect, item_effect, period_rows, 0, rng), folder / f"s{seed}",
                              schema=SCHEMA, config=PrepareConfig(min_count=1, split="4:4:1:1"), overwrite=True)
    v1_users = dataset.feature_spec.categorical[0].vocab_size
    hist_train = SplitArrays.concat([dataset.split("hist"), dataset.split("train")])
    append_split(dataset, "online", _day(everyone, effect, item_effect, online_rows, period_rows, rng),
                 overwrite=True, growth=GrowthConfig(min_count=min_count))
    grown = PreparedDataset.open(dataset.path)
    online = grown.split("online")
    new_rows = online.categorical[:, 0] >= v1_users  # the users that got an id in version 2
    seed_everything(seed)
    teacher = build_model(TEACHER, dataset.feature_spec, base_rate=positive_rate(hist_train))
    Trainer(teacher, TrainConfig(epochs=1, batch_size=256, seed=seed, num_threads=1, progress=False,
                                 patience=None, restore_best=False)).fit(hist_train)
    student = build_model(STUDENT, dataset.feature_spec, base_rate=positive_rate(hist_train))
    project_model_embeddings(teacher, student, seed=seed)
    return {
        "seed": seed,
        "new_row_share": float(new_rows.mean()),
        "vocab_version": grown.manifest.vocab_version,
        "grown_auc": _new_id_auc(teacher, student, online, new_rows, True, seed),
        "unk_auc": _new_id_auc(teacher, student, online, new_rows, False, seed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--users", type=int, default=1000, help="Users of the first period (version 1).")
    parser.add_argument("--new-share", type=float, default=0.3, help="Share of the online day's users that are new.")
    parser.add_argument("--period-rows", type=int, default=40_000, help="Rows of hist, train, online and test.")
    parser.add_argument("--online-rows", type=int, default=30_000, help="Rows of the appended online day.")
    parser.add_argument("--min-count", type=int, default=10, help="Sightings that earn a new user an id.")
    parser.add_argument("--user-std", type=float, default=1.0, help="Spread of the users' click logit effects.")
    parser.add_argument("--json", action="store_true", help="One JSON object on stdout instead of the table.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        runs = [measure(seed, args.users, args.new_share, args.period_rows, args.online_rows, args.min_count,
                        args.user_std, Path(work)) for seed in args.seeds]
    delta, half = paired_interval([r["grown_auc"] - r["unk_auc"] for r in runs])
    summary = {"grown_auc": statistics.fmean(r["grown_auc"] for r in runs),
               "unk_auc": statistics.fmean(r["unk_auc"] for r in runs),
               "delta": delta, "delta_ci95": half, "seeds": len(runs), "runs": runs}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print("seed  new rows  grown AUC  <UNK> AUC  delta")
    for r in runs:
        print(f"{r['seed']:>4}  {r['new_row_share']:8.3f}  {r['grown_auc']:9.4f}  {r['unk_auc']:9.4f}  "
              f"{r['grown_auc'] - r['unk_auc']:+.4f}")
    print(f"mean  prequential AUC on new-id rows: grown {summary['grown_auc']:.4f}, <UNK> {summary['unk_auc']:.4f}; "
          f"grown - <UNK> {delta:+.4f} ± {half:.4f} (95% t-interval, {len(runs)} seeds)")


if __name__ == "__main__":
    main()
