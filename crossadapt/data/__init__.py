"""The data layer: schema, readers, vocabulary, time-ordered splits, prepared datasets, batches,
and a synthetic click log with known click probabilities.

Typical use::

    from crossadapt.data import PreparedDataset, iter_batches, prepare_dataset, synthetic_preset

    ds = prepare_dataset(synthetic_preset("criteo_like", rows=200_000), "data/synth")
    train = ds.split("train")                      # memory-mapped SplitArrays
    for batch in iter_batches(train, 4096, shuffle=True, seed=epoch):
        ...
    # a student reuses the teacher's vocabulary, so row i of each table is the same value:
    prepare_dataset("day2.tsv", "data/day2", source_format="criteo", vocabulary=Vocabulary.load("data/synth"))

    # files of any size stream in bounded memory (several day files, gzip); a progress bar on request:
    prepare_dataset(["day_0.gz", "day_1.gz"], "data/criteo", source_format="criteo", progress=BarProgress())
    # a later partition, whose new values get ids once seen 10 times (a new vocabulary version):
    append_split("data/criteo", "day_2", "day_2.gz", source_format="criteo", growth=GrowthConfig(min_count=10))
"""

from typing import TYPE_CHECKING

from crossadapt.lazy import lazy_members

if TYPE_CHECKING:
    from crossadapt.data.arrays import SplitArrays
    from crossadapt.data.batch import Batch
    from crossadapt.data.errors import BadRow, BadRowReport, DataFormatError
    from crossadapt.data.growth import GrowthConfig, ids_for_sizes
    from crossadapt.data.iterate import iter_batches
    from crossadapt.data.movielens import fetch_movielens_100k, read_movielens_100k
    from crossadapt.data.prepare import append_split, load_source, prepare_dataset
    from crossadapt.data.prepared import DatasetManifest, PreparedDataset
    from crossadapt.data.progress import BarProgress, NoProgress, Progress
    from crossadapt.data.raw import RawData, SourceInfo
    from crossadapt.data.readers import from_table, read_avazu, read_criteo, read_csv, read_parquet, read_source
    from crossadapt.data.schema import DEFAULT_MIN_COUNT, SPLIT_NAMES, DatasetSchema, PrepareConfig
    from crossadapt.data.synthetic import generate_synthetic, synthetic_schema
    from crossadapt.data.synthetic_config import PRESETS, SyntheticConfig, synthetic_preset
    from crossadapt.data.stream_source import StreamingSource
    from crossadapt.data.synthetic_export import write_criteo_tsv
    from crossadapt.data.vocabulary import MISSING_TOKEN, UNK_TOKEN, Vocabulary, VocabularyRef, VocabularyVersion

_HOMES = {
    **dict.fromkeys(('SplitArrays',), 'arrays'),
    **dict.fromkeys(('Batch',), 'batch'),
    **dict.fromkeys(('BadRow', 'BadRowReport', 'DataFormatError'), 'errors'),
    **dict.fromkeys(('GrowthConfig', 'ids_for_sizes'), 'growth'),
    **dict.fromkeys(('iter_batches',), 'iterate'),
    **dict.fromkeys(('fetch_movielens_100k', 'read_movielens_100k'), 'movielens'),
    **dict.fromkeys(('append_split', 'load_source', 'prepare_dataset'), 'prepare'),
    **dict.fromkeys(('DatasetManifest', 'PreparedDataset'), 'prepared'),
    **dict.fromkeys(('BarProgress', 'NoProgress', 'Progress'), 'progress'),
    **dict.fromkeys(('RawData', 'SourceInfo'), 'raw'),
    **dict.fromkeys(('from_table', 'read_avazu', 'read_criteo', 'read_csv', 'read_parquet', 'read_source'), 'readers'),
    **dict.fromkeys(('DEFAULT_MIN_COUNT', 'SPLIT_NAMES', 'DatasetSchema', 'PrepareConfig'), 'schema'),
    **dict.fromkeys(('generate_synthetic', 'synthetic_schema'), 'synthetic'),
    **dict.fromkeys(('PRESETS', 'SyntheticConfig', 'synthetic_preset'), 'synthetic_config'),
    **dict.fromkeys(('StreamingSource',), 'stream_source'),
    **dict.fromkeys(('write_criteo_tsv',), 'synthetic_export'),
    **dict.fromkeys(('MISSING_TOKEN', 'UNK_TOKEN', 'Vocabulary', 'VocabularyRef', 'VocabularyVersion'), 'vocabulary'),
}
__getattr__ = lazy_members(__name__, _HOMES, globals())

__all__ = [
    "Batch", "BadRow", "BadRowReport", "BarProgress", "DataFormatError", "DatasetManifest", "DatasetSchema",
    "DEFAULT_MIN_COUNT", "GrowthConfig", "MISSING_TOKEN", "NoProgress", "PRESETS", "PrepareConfig",
    "PreparedDataset", "Progress", "RawData", "SPLIT_NAMES", "SourceInfo", "SplitArrays", "StreamingSource",
    "SyntheticConfig", "UNK_TOKEN", "Vocabulary", "VocabularyRef", "VocabularyVersion", "append_split",
    "fetch_movielens_100k", "from_table", "generate_synthetic", "ids_for_sizes", "iter_batches", "load_source",
    "prepare_dataset", "read_avazu", "read_criteo", "read_csv", "read_movielens_100k", "read_parquet",
    "read_source", "synthetic_preset", "synthetic_schema", "write_criteo_tsv",
]  # fmt: skip
