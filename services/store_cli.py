"""`crossadapt store …`: put a local teacher checkpoint and prepared splits into the platform's store.

A cluster starts with an empty store; a ModelSwitch names refs in it. These commands publish what a
team has on disk, with the store from the CROSSADAPT_* settings (S3/MinIO or a local folder):

    crossadapt store put-model runs/teacher --name ctr/mlp-teacher --vocab data/criteo   # model + tables + vocabulary
    crossadapt store put-split data/criteo --split train --name ctr/train
    crossadapt store put-split data/criteo --split online --name ctr/stream --partitions 24
    crossadapt store ls
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Publish local checkpoints and datasets into the platform's store.", no_args_is_help=True,
                  add_completion=False)


def _stores():  # noqa: ANN202
    from services.common.settings import get_settings
    from services.common.storage import CheckpointStore, open_object_store
    from services.common.storage.datasets import DatasetStore

    objects = open_object_store(get_settings())
    return CheckpointStore(objects), DatasetStore(objects)


@app.command("put-model")
def put_model(
    checkpoint: Annotated[Path, typer.Argument(help="A core checkpoint folder (crossadapt train --out …).")],
    name: Annotated[str, typer.Option(help="Checkpoint name in the store, e.g. ctr/mlp-teacher.")],
    vocab: Annotated[Optional[Path], typer.Option(help="The prepared dataset (or its vocab/ folder) whose "
                                                       "vocabulary the model uses: the predictor needs it.")] = None,
) -> None:
    """Publish a model checkpoint (weights, sharded tables, vocabulary) as the next version of NAME."""
    from crossadapt.checkpoint import load_checkpoint
    from crossadapt.data.vocabulary import Vocabulary
    from services.common.model_io import publish_model

    loaded = load_checkpoint(checkpoint)
    vocabulary = Vocabulary.load(vocab) if vocab is not None else None
    checkpoints, _ = _stores()
    manifest = loaded.manifest
    published = publish_model(checkpoints, name, loaded.model, feature_spec=manifest.feature_spec,
                              vocab_hash=manifest.vocab_hash, vocabulary=vocabulary, parent=str(checkpoint.resolve()),
                              metrics=manifest.metrics, extra=manifest.extra)
    typer.echo(published.ref)


@app.command("put-split")
def put_split(
    dataset: Annotated[Path, typer.Argument(help="A prepared dataset folder (crossadapt data prepare --out …).")],
    split: Annotated[str, typer.Option(help="Which split: hist, train, online, test.")],
    name: Annotated[str, typer.Option(help="Dataset name in the store, e.g. ctr/train.")],
    partitions: Annotated[int, typer.Option(min=1, help="Time partitions to cut it into (in row order).")] = 1,
) -> None:
    """Publish one split of a prepared dataset as time-partitioned Parquet."""
    from crossadapt.data.prepared import PreparedDataset
    from services.common.model_io import write_split

    prepared = PreparedDataset.open(dataset)
    if split not in prepared.split_names:
        raise typer.BadParameter(f"{dataset} has splits {prepared.split_names}, not {split!r}", param_hint="--split")
    _, datasets = _stores()
    written = write_split(datasets, name, prepared.split(split), prepared.feature_spec,
                          vocab_hash=prepared.vocab_hash, partitions=partitions)
    typer.echo(f"{name}: {len(written)} partition(s) {written[0]} … {written[-1]}")


@app.command("ls")
def list_store(prefix: Annotated[str, typer.Argument(help="Only names starting with this.")] = "") -> None:
    """Checkpoints (with their versions) and datasets (with their partition counts) in the store."""
    checkpoints, datasets = _stores()
    for key in sorted(checkpoints.objects.list_keys("checkpoints")):
        if key.endswith("/manifest.json"):
            ref = key.removeprefix("checkpoints/").removesuffix("/manifest.json")
            if ref.startswith(prefix):
                typer.echo(f"checkpoint  {ref}")
    seen = set()
    for key in sorted(datasets.objects.list_keys("datasets")):
        name = key.removeprefix("datasets/").rsplit("/", 2)[0]
        if name.startswith(prefix) and name not in seen:
            seen.add(name)
            typer.echo(f"dataset     {name}  ({len(datasets.partitions(name))} partitions)")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="store")
