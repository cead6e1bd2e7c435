"""What a local rollout leaves behind: a rich table, rollout.json, rollout.png (timeline) and rollout.md."""

from __future__ import annotations

import json
from pathlib import Path

from operators.local_rollout.rollout import GateCheck, RolloutResult

MARKER_BEGIN, MARKER_END = "<!-- rollout:begin -->", "<!-- rollout:end -->"


def _interval_text(figures: dict[str, float | None], fmt: str = "+.4f", before: str = " ", comma: str = ", ") -> str:
    """`estimate [lower, upper]` (ΔAUC, ΔLogLoss with a sign; PCOC with fmt ".3f"); — when unknown."""
    if figures.get("estimate") is None:
        return "—"
    text = format(figures["estimate"], fmt)
    if figures.get("lower") is not None and figures.get("upper") is not None:
        text += f"{before}[{format(figures['lower'], fmt)}{comma}{format(figures['upper'], fmt)}]"
    return text


def _position(check: GateCheck) -> str:
    return "Shadow" if check.step is None else f"Canary {check.step + 1}"


def step_rows(result: RolloutResult) -> list[list[str]]:
    """One row per position reached: the figures of its last gate check."""
    return [[_position(c), f"{c.student_percent}%", str(c.rows_sent), str(c.paired_rows),
             _interval_text(c.delta_auc), _interval_text(c.delta_logloss), _interval_text(c.student_pcoc, ".3f"),
             f"{c.verdict} ({c.reason})"]
            for c in result.step_summaries()]


HEADERS = ["step", "student", "rows sent", "n (paired)", "ΔAUC [CI]", "ΔLogLoss [CI]", "student PCOC [CI]",
           "gate"]


def _terminal_interval(figures: dict[str, float | None], fmt: str) -> str:
    """The estimate, and below it the interval (compact: an 80-column terminal holds the table)."""
    return _interval_text(figures, fmt, before="\n", comma=",")


def print_rollout(result: RolloutResult, console: object | None = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"Rollout of {result.student} (teacher {result.teacher})", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 1), collapse_padding=True)
    for header in ("step", "n", "ΔAUC [95% CI]", "ΔLogLoss", "PCOC", "gate"):
        table.add_column(header, justify="left" if header in ("step", "gate") else "right", no_wrap=True)
    for c in result.step_summaries():
        table.add_row(f"{_position(c)}\n{c.student_percent}%", f"{c.paired_rows}\nof {c.rows_sent}",
                      _terminal_interval(c.delta_auc, "+.3f"), _terminal_interval(c.delta_logloss, "+.3f"),
                      _terminal_interval(c.student_pcoc, ".3f"), f"{c.verdict}\n{c.reason}")
    console.print(table)
    style = "green" if result.outcome == "Promoted" else "red" if result.outcome == "RolledBack" else "yellow"
    console.print(f"[{style}]{result.outcome}[/{style}] ({result.reason}): {result.message}")
    console.print(f"{serving_sentence(result)}; {result.rows_sent} rows replayed, {result.labelled_rows} labelled, "
                  f"{result.seconds:.1f}s")


def plot_timeline(result: RolloutResult, path: Path) -> Path:
    """Student share (steps) and ΔAUC with its confidence band against labelled rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checks = result.checks
    labelled = [c.labelled_rows for c in checks]
    fig, (share_ax, auc_ax) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5), height_ratios=[1, 2])
    share_ax.step(labelled, [c.student_percent for c in checks], where="post", color="tab:blue")
    share_ax.set_ylabel("student share (%)")
    share_ax.set_ylim(-5, 105)
    share_ax.set_title(f"{result.outcome}: {result.reason}")
    known = [c for c in checks if c.delta_auc["lower"] is not None and c.delta_auc["upper"] is not None]
    xs = [c.labelled_rows for c in known]
    auc_ax.fill_between(xs, [c.delta_auc["lower"] for c in known], [c.delta_auc["upper"] for c in known],
                        color="tab:orange", alpha=0.3, label="95% CI")
    auc_ax.plot(xs, [c.delta_auc["estimate"] for c in known], color="tab:orange", marker="o", markersize=3,
                label="ΔAUC (student − teacher), one point per gate check")
    drop = result.gates.get("maxAucDrop")
    if drop is not None:
        auc_ax.axhline(-drop, color="tab:red", linestyle="--", linewidth=1, label=f"−maxAucDrop ({drop})")
    auc_ax.axhline(0, color="grey", linewidth=0.5)
    for index, check in enumerate(checks[1:], start=1):
        if check.student_percent != checks[index - 1].student_percent:
            for ax in (share_ax, auc_ax):
                ax.axvline(check.labelled_rows, color="grey", linestyle=":", linewidth=0.8)
    if checks:
        auc_ax.axvline(checks[-1].labelled_rows, color="tab:green" if result.outcome == "Promoted" else "tab:red",
                       linewidth=1.2, label=result.outcome)
    auc_ax.set_xlabel("labelled rows (delayed feedback)")
    auc_ax.set_ylabel("ΔAUC, step window")
    auc_ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def serving_sentence(result: RolloutResult, code: str = "") -> str:
    """Where traffic ends up. A promotion moves the student onto the serving arm, so '0% on the student
    arm' alone would read as if the student had lost; name the serving arm's model and both shares."""
    student_percent = 100 * (result.final_student_weight or 0)
    serving = f"{code}{result.serving_checkpoint}{code}"
    promoted = " (the promoted student)" if result.serving_checkpoint == result.student else ""
    return (f"the predictor serves {serving}{promoted} on its serving arm with {100 - student_percent:.0f}% of "
            f"traffic, {student_percent:.0f}% on the student arm")


def markdown(result: RolloutResult, plot_name: str) -> str:
    gates = ", ".join(f"{k} {v}" for k, v in result.gates.items())
    lines = [
        "## Rollout (local predictor, replayed test split)", "",
        f"Teacher `{result.teacher}`, student `{result.student}`; steps {result.steps}% of traffic; gates: {gates}.",
        f"The test split was replayed in time order as traffic ({result.rows_sent} rows, {result.labelled_rows} "
        "labelled by delayed feedback); the gate read the predictor's paired metrics of each step's window and "
        "decided with the operator's functions.", "",
        "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS),
        *("| " + " | ".join(row) + " |" for row in step_rows(result)), "",
        f"**{result.outcome}** ({result.reason}): {result.message}", "",
        f"Afterwards: {serving_sentence(result, code='`')}.", "",
        f"![rollout timeline]({plot_name})", "",
    ]
    return "\n".join(lines)


def write_rollout_report(result: RolloutResult, out_dir: Path) -> dict[str, Path]:
    """rollout.json, rollout.png, rollout.md; and a link section in the switch's report.md if there is one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "rollout.json", "png": out_dir / "rollout.png", "md": out_dir / "rollout.md"}
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    plot_timeline(result, paths["png"])
    text = markdown(result, paths["png"].name)
    paths["md"].write_text(text)
    report = out_dir / "report.md"
    if report.is_file():
        body = report.read_text()
        if MARKER_BEGIN in body and MARKER_END in body:
            body = body[:body.index(MARKER_BEGIN)].rstrip("\n") + body[body.index(MARKER_END) + len(MARKER_END):]
        report.write_text(body.rstrip("\n") + f"\n\n{MARKER_BEGIN}\n{text}{MARKER_END}\n")
    return paths
