"""Reports: the switch's `report.md` + PNG plots, and the paper benchmark's Markdown tables (Tables 1-3).

Plots use matplotlib's Agg backend (no display needed). AUC is stored as a fraction and shown in percent.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)

from crossadapt.transfer.experiments.results import (  # noqa: E402
    AblationRow,
    Curve,
    DriftSummary,
    MethodStats,
    OnlineSummary,
    PairedDelta,
    PaperBenchResults,
    Score,
    SettingResults,
    SwitchResults,
    WidthRow,
)

METRICS_PNG = "metrics.png"
CONVERGENCE_PNG = "convergence.png"
DRIFT_PNG = "drift.png"


def _pct(auc: float) -> str:
    return f"{100.0 * auc:.2f}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


# --------------------------------------------------------------------------- switch report


def render_switch_markdown(results: SwitchResults, *, plots: dict[str, str] | None = None) -> str:
    """The switch's `report.md`: results table, stage timings, drift and links to the PNGs."""
    plots = plots or {}
    lines = [
        "# CrossAdapt switch report",
        "",
        f"- dataset: `{results.dataset}`",
        f"- teacher checkpoint: `{results.teacher_checkpoint}`",
        f"- student checkpoint: `{results.student_checkpoint}` (parent: the teacher above)",
    ]
    if results.oracle_auc is not None:
        lines.append(f"- oracle AUC (true click probability on the test split): {_pct(results.oracle_auc)}%")
    disabled = sorted(name for name, on in results.ablation.items() if not on)
    if disabled:
        lines.append(f"- ablation: disabled {', '.join(disabled)}")
    if results.verdict is not None:
        word = "promote" if results.verdict.promote else "do not promote"
        lines += ["", f"## Verdict: {word}", "", results.verdict.reason]
    lines += ["", "## Test results", "", "| Model | Role | AUC (%) | LogLoss | Train time (s) | ΔAUC vs teacher (pp) |",
              "|---|---|---:|---:|---:|---:|"]
    for score in [results.teacher, results.student, *results.baselines]:
        delta = 100.0 * (score.auc - results.teacher.auc)
        lines.append(
            f"| {score.name} | {score.role} | {_pct(score.auc)} | {score.logloss:.4f} | "
            f"{_seconds(score.train_seconds)} | {delta:+.2f} |"
        )
    if results.optim is not None:
        lines += ["", "## Optimiser", "", results.optim.reason()]
    if results.network_reuse is not None:
        lines += ["", "## Student initialisation", "", results.network_reuse.sentence()]
    if results.stage_seconds:
        lines += ["", "## Stage wall time", "", "| Stage | Seconds |", "|---|---:|"]
        lines += [f"| {stage} | {secs:.2f} |" for stage, secs in results.stage_seconds.items()]
    if results.operations:
        lines += ["", f"## Platform operations ({results.platform or 'services'})", "",
                  "| Service | Kind | Operation | State | Result | Seconds |", "|---|---|---|---|---|---:|"]
        lines += [f"| {op.service} | {op.kind} | `{op.operation_id}` | {op.state} | {op.result or '–'} | "
                  f"{op.seconds:.2f} |" for op in results.operations]
    if results.drift is not None:
        d = results.drift
        lines += [
            "",
            "## Distribution shift",
            "",
            f"Δ_shift ({d.metric}) = {d.shift:.4f} with θ_low = {d.theta_low}, θ_high = {d.theta_high} "
            f"→ replay ratio r_enh = {d.replay_ratio:.3f}.",
        ]
        top = sorted(d.per_feature.items(), key=lambda kv: kv[1], reverse=True)[:5]
        if top:
            lines.append("Most shifted fields: " + ", ".join(f"`{k}` {v:.4f}" for k, v in top) + ".")
    if results.online is not None:
        lines += ["", "## Online co-distillation", "", _online_line(results.online)]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{title}]({name})" for title, name in plots.items()]
    return "\n".join(lines) + "\n"


def _online_line(online: OnlineSummary) -> str:
    line = (f"{online.rows:,} stream rows with {online.replay_rows:,} replayed training rows; "
            f"the teacher stepped {online.teacher_updates} times.")
    rolling = online.rolling_drift
    if rolling is not None:
        shift = "no estimate yet" if rolling.shift is None else f"Δ_shift {rolling.shift:.4f}"
        line += (f" Rolling drift: {rolling.windows} windows over {rolling.rows:,} rows, {shift} → "
                 f"r_enh {rolling.replay_ratio:.3f} at the end.")
    if online.collaboration_share is not None:
        line += f" The student taught the teacher on {online.collaboration_share:.1%} of the stream."
    return line


def plot_scores(scores: list[Score], path: Path) -> None:
    """Two bar charts side by side: test AUC (%) and LogLoss per model."""
    names = [s.name for s in scores]
    colours = [{"teacher": "tab:gray", "student": "tab:blue", "baseline": "tab:orange"}[s.role] for s in scores]
    fig, (ax_auc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    aucs = [100.0 * s.auc for s in scores]
    ax_auc.bar(names, aucs, color=colours)
    low = min(aucs) - max(0.5, 0.2 * (max(aucs) - min(aucs) + 1e-9))
    ax_auc.set_ylim(bottom=max(0.0, low))
    ax_auc.set_ylabel("AUC (%)")
    ax_auc.set_title("Test AUC (higher is better)")
    ax_loss.bar(names, [s.logloss for s in scores], color=colours)
    ax_loss.set_ylabel("LogLoss")
    ax_loss.set_title("Test LogLoss (lower is better)")
    for ax in (ax_auc, ax_loss):
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_convergence(curves: list[Curve], path: Path, *, title: str = "Convergence") -> None:
    """Prequential AUC (%) against training wall seconds, one line per curve."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for curve in curves:
        if curve.seconds:
            ax.plot(curve.seconds, [100.0 * a for a in curve.auc], marker=".", label=curve.name)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("prequential AUC (%)")
    ax.set_title(title)
    if any(c.seconds for c in curves):
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_drift(drift: DriftSummary, path: Path) -> None:
    """Per-field divergence bars with the θ_low / θ_high thresholds as horizontal lines."""
    items = sorted(drift.per_feature.items(), key=lambda kv: kv[1], reverse=True)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(items) + 2), 4))
    ax.bar([k for k, _ in items], [v for _, v in items], color="tab:purple")
    ax.axhline(drift.theta_low, color="tab:green", linestyle="--", label=f"θ_low {drift.theta_low}")
    ax.axhline(drift.theta_high, color="tab:red", linestyle="--", label=f"θ_high {drift.theta_high}")
    ax.set_ylabel(f"{drift.metric} divergence (mean over windows)")
    ax.set_title(f"Per-field drift (Δ_shift = {drift.shift:.4f}, r_enh = {drift.replay_ratio:.3f})")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_switch_report(results: SwitchResults, out_dir: Path) -> Path:
    """Write `report.md`, `results.json` and the PNGs into `out_dir`; returns the report path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {"Test AUC and LogLoss": METRICS_PNG}
    plot_scores([results.teacher, results.student, *results.baselines], out_dir / METRICS_PNG)
    plots["Convergence (prequential AUC vs seconds)"] = CONVERGENCE_PNG
    plot_convergence(results.curves, out_dir / CONVERGENCE_PNG, title="Online convergence")
    if results.drift is not None:
        plots["Per-feature drift"] = DRIFT_PNG
        plot_drift(results.drift, out_dir / DRIFT_PNG)
    (out_dir / "results.json").write_text(results.model_dump_json(indent=2))
    report = out_dir / "report.md"
    report.write_text(render_switch_markdown(results, plots=plots))
    return report


# --------------------------------------------------------------------------- paper benchmark tables

TABLE1_ORDER = (
    "Full-Retrain",
    "Scratch",
    "Scratch-Online",
    "Vanilla-KD",
    "Hint-KD",
    "RKD",
    "CrossAdapt-Full",
    "CrossAdapt-Sample",
    "CrossAdapt-Adaptive",
)


def _stat_cells(stats: MethodStats, *, time: bool = True) -> list[str]:
    cells = [
        f"{_pct(stats.auc_mean)} ± {_pct(stats.auc_std)}",
        f"{stats.logloss_mean:.4f} ± {stats.logloss_std:.4f}",
    ]
    if time:
        cells.append(f"{stats.train_seconds_mean:.1f}")
    return cells


def render_table1(setting: SettingResults) -> str:
    """Paper Table 1 for one dataset: methods per student, then a Δ (Sample) row against Scratch."""
    lines = [
        f"### Table 1 — {setting.name}" + (f" (oracle AUC {_pct(setting.oracle_auc)}%)" if setting.oracle_auc else ""),
        "",
        "| Student | Method | AUC (%) | LogLoss | Time (s) |",
        "|---|---|---:|---:|---:|",
    ]
    for pair in setting.pairs:
        label = f"{pair.student} (teacher {pair.teacher})"
        teacher = setting.teacher_scores.get(pair.teacher)
        if teacher is not None:
            lines.append(f"| {label} | Teacher Model | " + " | ".join(_stat_cells(teacher, time=False)) + " | – |")
        ordered = [m for m in TABLE1_ORDER if m in pair.methods] + sorted(set(pair.methods) - set(TABLE1_ORDER))
        for method in ordered:
            lines.append(f"| {label} | {method} | " + " | ".join(_stat_cells(pair.methods[method])) + " |")
        scratch = pair.methods.get("Scratch")
        for ours in ("CrossAdapt-Sample", "CrossAdapt-Adaptive"):
            mine = pair.methods.get(ours)
            if scratch is None or mine is None:
                continue
            d_auc = 100.0 * (mine.auc_mean - scratch.auc_mean)
            d_loss = mine.logloss_mean - scratch.logloss_mean
            d_time = 100.0 * (mine.train_seconds_mean / max(scratch.train_seconds_mean, 1e-9) - 1.0)
            short = ours.removeprefix("CrossAdapt-")
            lines.append(f"| {label} | Δ ({short}) vs Scratch | {d_auc:+.2f} | {d_loss:+.4f} | {d_time:+.1f}% |")
    return "\n".join(lines) + "\n"


def _interval(ci: tuple[float, float] | None) -> str:
    return "–" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _delta_cells(delta: PairedDelta) -> list[str]:
    """Δ (pp), its 95% seed interval and its 95% row-bootstrap interval."""
    return [f"{delta.delta_pp:+.2f}", _interval(delta.seed_ci_pp), _interval(delta.rows_ci_pp)]


def _interval_note(seeds: str) -> str:
    return (f"Δ = method − Scratch test AUC (pp), paired by seed ({seeds}); *seeds CI*: 95% t-interval of the "
            "per-seed deltas; *rows CI*: 95% interval of a paired bootstrap over the test rows (the same "
            "resamples for both methods and every seed). A CI above 0 means better than Scratch beyond that noise.")


def render_paired_deltas(setting: SettingResults) -> str:
    """Every method − Scratch per pair of one setting, with both 95% intervals and the time ratio."""
    if not setting.deltas:
        return ""
    seeds = setting.deltas[0].deltas[0].seeds if setting.deltas[0].deltas else 0
    lines = [f"#### Paired deltas vs Scratch — {setting.name}", "", _interval_note(f"{seeds} seed(s)"), "",
             "| Student | Method | Δ AUC (pp) | Seeds 95% CI | Rows 95% CI | Time / Scratch |",
             "|---|---|---:|---|---|---:|"]
    for pair in setting.deltas:
        label = f"{pair.student} (teacher {pair.teacher})"
        ordered = sorted(pair.deltas, key=lambda d: (TABLE1_ORDER.index(d.method) if d.method in TABLE1_ORDER
                                                     else len(TABLE1_ORDER), d.method))
        for d in ordered:
            ratio = "–" if d.time_ratio is None else f"{d.time_ratio:.0%}"
            lines.append(f"| {label} | {d.method} | " + " | ".join(_delta_cells(d)) + f" | {ratio} |")
    return "\n".join(lines) + "\n"


#: Issue #3's bar for CrossAdapt-Sample against Scratch, and for CrossAdapt-Full against Full-Retrain.
TARGET_SAMPLE_GAIN_PP, TARGET_SAMPLE_TIME_SHARE, TARGET_FULL_GAP_PP = 0.30, 0.40, -0.05


def render_gain_budget(settings: list[SettingResults]) -> str:
    """Where CrossAdapt-Sample's gain over Scratch comes from and goes, per setting and student (pp of AUC).

    ``Full-Retrain − Scratch`` is what `hist` is worth to this student: the most a perfect transfer of the
    teacher's history could add. ``CA-Full − Scratch`` is how much of it the transfer recovers on all of
    D_train, and ``CA-Full − CA-Sample`` what training on the 10% sample instead costs; the Sample gain is
    the first minus the second. The teacher's own gap to Scratch shows what the KD targets are worth.
    """
    head = ("| Setting | Student | Teacher − Scratch | Full-Retrain − Scratch | CA-Full − Scratch | "
            "CA-Full − CA-Sample | CA-Sample − Scratch | CA-Sample time / Scratch | Sample target | Full target |")
    lines = ["### Where the gain goes (AUC pp, means over seeds)", "",
             f"Targets: CA-Sample ≥ Scratch + {TARGET_SAMPLE_GAIN_PP:.2f} pp at ≤ {TARGET_SAMPLE_TIME_SHARE:.0%} of its "
             f"time; CA-Full ≥ Full-Retrain {TARGET_FULL_GAP_PP:+.2f} pp.", "", head, "|---|---|" + "---:|" * 8]

    def pp(a: MethodStats | None, b: MethodStats | None) -> float | None:
        return None if a is None or b is None else 100.0 * (a.auc_mean - b.auc_mean)

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:+.2f}"

    for setting in settings:
        for pair in setting.pairs:
            m = pair.methods
            scratch, sample, full, retrain = (m.get(k) for k in ("Scratch", "CrossAdapt-Sample", "CrossAdapt-Full",
                                                                  "Full-Retrain"))
            if scratch is None or sample is None:
                continue
            gain, share = pp(sample, scratch), sample.train_seconds_mean / max(scratch.train_seconds_mean, 1e-9)
            sample_ok = "met" if gain >= TARGET_SAMPLE_GAIN_PP and share <= TARGET_SAMPLE_TIME_SHARE else "not met"
            full_gap = pp(full, retrain)
            full_ok = "–" if full_gap is None else ("met" if full_gap >= TARGET_FULL_GAP_PP else "not met")
            cells = [setting.name, f"{pair.student} (teacher {pair.teacher})",
                     cell(pp(setting.teacher_scores.get(pair.teacher), scratch)), cell(pp(retrain, scratch)),
                     cell(pp(full, scratch)), cell(pp(full, sample)), cell(gain), f"{share:.0%}", sample_ok, full_ok]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_ablation_table(rows: list[AblationRow], *, student: str | None = None) -> str:
    """Paper Table 2: each configuration's AUC, its Δ (pp) against the full model, LogLoss."""
    full = next((r for r in rows if r.group == "full"), None)
    title = "### Table 2 — ablation" + (f" ({student} student)" if student else "")
    paired = any(r.vs_scratch is not None for r in rows)
    extra_head = " Δ vs Scratch (pp) | Seeds 95% CI | Rows 95% CI |" if paired else ""
    lines = [title, "", "| Configuration | AUC (%) | Δ (pp) | LogLoss |" + extra_head,
             "|---|---:|---:|---:|" + ("---:|---|---|" if paired else "")]
    for group, heading in (("full", None), ("offline", "*Offline components*"), ("online", "*Online components*")):
        members = [r for r in rows if r.group == group]
        if heading and members:
            lines.append(f"| {heading} | | | |" + (" | | |" if paired else ""))
        for row in members:
            delta = "–" if full is None or row is full else f"{100.0 * (row.stats.auc_mean - full.stats.auc_mean):+.2f}"
            auc, loss = _stat_cells(row.stats, time=False)
            tail = ""
            if paired:
                tail = " " + " | ".join(_delta_cells(row.vs_scratch) if row.vs_scratch else ["–"] * 3) + " |"
            lines.append(f"| {row.name} | {auc} | {delta} | {loss} |" + tail)
    if paired:
        lines += ["", "Δ (pp) is against the full model; " + _interval_note("per ablation seed")]
    return "\n".join(lines) + "\n"


def render_width_table(rows: list[WidthRow]) -> str:
    """Paper Table 3: AUC (%) per d_T → d_S with and without embedding projection; Δ = w/ ETP − Scratch."""
    lines = [
        "### Table 3 — embedding width adaptation (AUC %)",
        "",
        "| d_T → d_S | Kind | Teacher | Scratch | w/o ETP | w/ ETP | Δ (pp) | Seeds 95% CI | Rows 95% CI |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        kind = (
            "preservation"
            if row.teacher_dim == row.student_dim
            else ("expansion" if row.student_dim > row.teacher_dim else "reduction")
        )
        cells = [
            f"{_pct(s.auc_mean)} ± {_pct(s.auc_std)}"
            for s in (row.teacher, row.scratch, row.without_projection, row.with_projection)
        ]
        delta = 100.0 * (row.with_projection.auc_mean - row.scratch.auc_mean)
        intervals = _delta_cells(row.vs_scratch)[1:] if row.vs_scratch else ["–", "–"]
        mark = " *" if row.network_reused else ""
        lines.append(f"| {row.teacher_dim} → {row.student_dim}{mark} | {kind} | " + " | ".join(cells)
                     + f" | {delta:+.2f} | " + " | ".join(intervals) + " |")
    if any(row.vs_scratch for row in rows):
        lines += ["", "Δ = w/ ETP − Scratch; " + _interval_note("per width seed")]
    if any(row.network_reused for row in rows):
        lines += ["", "\\* The student is the teacher's own network at the teacher's width: w/ ETP's student also started "
                  "from the teacher's network (offline.reuse_teacher_network), not from the projection alone."]
    return "\n".join(lines) + "\n"


def render_bench_markdown(results: PaperBenchResults, *, convergence_png: str | None = None) -> str:
    """The whole benchmark report: Table 1 per setting, Table 2, Table 3 and the convergence plot."""
    parts = [f"# CrossAdapt paper benchmark — preset `{results.preset}`", ""]
    parts.append(f"Total wall time: {results.wall_seconds:.1f} s. AUC in percent (mean ± sample std over seeds); "
                 "Time is the student's training wall time (offline + online), evaluation excluded.\n")
    for setting in [results.main, *results.extra_settings]:
        parts.append(render_table1(setting))
        if setting.deltas:
            parts.append(render_paired_deltas(setting))
    parts.append(render_gain_budget([results.main, *results.extra_settings]))
    if results.ablation:
        parts.append(render_ablation_table(results.ablation, student=results.ablation_student))
    if results.widths:
        parts.append(render_width_table(results.widths))
    if convergence_png:
        parts.append(f"### Convergence\n\n![convergence]({convergence_png})\n")
    if results.degenerate_runs:
        parts.append(
            f"### Degenerate runs\n\n{len(results.degenerate_runs)} run(s) ended as a constant predictor "
            "(test AUC 0.5 ± 0.005); they are included in the means above:\n\n"
            + "\n".join(f"- {run}" for run in results.degenerate_runs) + "\n"
        )
    return "\n".join(parts)
