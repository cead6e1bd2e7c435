"""Report rendering on fixed inputs: table content, Δ rows, and non-empty PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossadapt.transfer.optim_fit import choose_optim

from crossadapt.transfer.experiments.report import (
    render_ablation_table,
    render_bench_markdown,
    render_gain_budget,
    render_switch_markdown,
    render_table1,
    render_width_table,
    write_switch_report,
)
from crossadapt.transfer.experiments.results import (
    AblationRow,
    Curve,
    DriftSummary,
    MethodStats,
    PairedDelta,
    PaperBenchResults,
    PairResult,
    RunRecord,
    Score,
    SettingResults,
    SwitchResults,
    WidthRow,
)


def _stats(auc: float, loss: float = 0.45, secs: float = 10.0, auc_std: float = 0.0) -> MethodStats:
    return MethodStats(auc_mean=auc, auc_std=auc_std, logloss_mean=loss, logloss_std=0.0, train_seconds_mean=secs)


def _switch_results() -> SwitchResults:
    return SwitchResults(
        teacher=Score(name="Teacher (mlp-8)", role="teacher", auc=0.7508, logloss=0.4526),
        student=Score(name="CrossAdapt (fibinet-16)", role="student", auc=0.7529, logloss=0.4511, train_seconds=12.5),
        baselines=[Score(name="Scratch", role="baseline", auc=0.7490, logloss=0.4556, train_seconds=30.0)],
        curves=[Curve(name="CrossAdapt", seconds=[1.0, 2.0, 3.0], auc=[0.70, 0.72, 0.75])],
        drift=DriftSummary(
            metric="js", shift=0.02, replay_ratio=0.06, theta_low=0.01, theta_high=0.05,
            per_feature={"C1": 0.03, "C2": 0.001, "I1": 0.05},
        ),
        stage_seconds={"projection": 0.1, "offline": 5.0},
        oracle_auc=0.80,
        teacher_checkpoint="/x/teacher",
        student_checkpoint="/x/student",
        dataset="synthetic:small",
        ablation={"projection": True, "sampling": False},
        optim=choose_optim("data", basis_rows=16_000, basis="offline sample (r = 0.1 of 160000 D_train rows)"),
    )


def test_switch_markdown_lists_models_with_percent_auc_and_delta() -> None:
    text = render_switch_markdown(_switch_results())
    assert "| Teacher (mlp-8) | teacher | 75.08 | 0.4526 | – | +0.00 |" in text
    assert "| CrossAdapt (fibinet-16) | student | 75.29 | 0.4511 | 12.5 | +0.21 |" in text
    assert "| Scratch | baseline | 74.90 | 0.4556 | 30.0 | -0.18 |" in text
    assert "oracle AUC (true click probability on the test split): 80.00%" in text
    assert "disabled sampling" in text
    assert "r_enh = 0.060" in text
    assert ("## Optimiser\n\nbatch 128, embedding lr 0.003125, dense lr 0.001: fitted to the data (optim: data)"
            in text) and "16000 rows of the offline sample (r = 0.1 of 160000 D_train rows) → 125 steps" in text
    # Most shifted first.
    assert text.index("`I1` 0.0500") < text.index("`C1` 0.0300") < text.index("`C2` 0.0010")


def test_switch_markdown_says_where_the_students_network_started() -> None:
    from crossadapt.transfer.network_reuse import NetworkReuse

    assert "Student initialisation" not in render_switch_markdown(_switch_results())  # not asked for
    reused = _switch_results().model_copy(update={"network_reuse": NetworkReuse(reused=True, tensors=9)})
    assert ("## Student initialisation\n\nThe student has the teacher's architecture and width: its network "
            "started from the teacher's (9 tensors, the logit offset included)") in render_switch_markdown(reused)
    other = _switch_results().model_copy(update={"network_reuse": NetworkReuse(
        reused=False, reason="the teacher is 'mlp', the student 'fibinet'")})
    assert ("The student's network started from its own random init (the teacher is 'mlp', the student "
            "'fibinet'); its tables were projected.") in render_switch_markdown(other)


def test_write_switch_report_writes_markdown_json_and_non_empty_pngs(tmp_path: Path) -> None:
    report = write_switch_report(_switch_results(), tmp_path)
    assert report == tmp_path / "report.md"
    for name in ("metrics.png", "convergence.png", "drift.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, name
        assert f"]({name})" in report.read_text()
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded["student"]["auc"] == pytest.approx(0.7529)
    assert SwitchResults.model_validate(loaded) == _switch_results()


def test_table1_orders_methods_and_computes_delta_rows_against_scratch() -> None:
    setting = SettingResults(
        name="synthetic",
        oracle_auc=0.81,
        pairs=[
            PairResult(
                teacher="mlp-8",
                student="fibinet-16",
                methods={
                    "CrossAdapt-Sample": _stats(0.8027, 0.4515, 110.0),
                    "Scratch": _stats(0.8008, 0.4544, 381.0),
                    "Full-Retrain": _stats(0.8038, 0.4504, 462.5),
                },
            )
        ],
        teacher_scores={"mlp-8": _stats(0.8008, 0.4526, 50.0, auc_std=0.0002)},
    )
    text = render_table1(setting)
    lines = text.splitlines()
    rows = [line for line in lines if line.startswith("| fibinet-16")]
    assert [r.split(" | ")[1] for r in rows] == [
        "Teacher Model", "Full-Retrain", "Scratch", "CrossAdapt-Sample", "Δ (Sample) vs Scratch",
    ]
    assert "80.08 ± 0.02" in rows[0]
    # +0.19 pp AUC, -0.0029 LogLoss, 110/381 - 1 = -71.1 % time (the paper's FiBiNET Criteo row).
    assert rows[-1].endswith("| +0.19 | -0.0029 | -71.1% |")
    assert "oracle AUC 81.00%" in lines[0]


def test_ablation_table_deltas_are_against_the_full_model() -> None:
    rows = [
        AblationRow(name="CrossAdapt-Sample", group="full", stats=_stats(0.8027)),
        AblationRow(name="w/o projection", group="offline", stats=_stats(0.8012)),
        AblationRow(name="w/o online stage", group="online", stats=_stats(0.7987)),
    ]
    text = render_ablation_table(rows, student="fibinet-16")
    assert "| w/o projection | 80.12 ± 0.00 | -0.15 | 0.4500 ± 0.0000 |" in text
    assert "| w/o online stage | 79.87 ± 0.00 | -0.40 |" in text
    assert text.index("*Offline components*") < text.index("w/o projection") < text.index("*Online components*")
    rows[1].vs_scratch = PairedDelta(method="w/o projection", versus="Scratch", seeds=3, delta_pp=-0.31,
                                     seed_ci_pp=None, rows_ci_pp=(-0.52, -0.1))
    paired = render_ablation_table(rows)
    assert "| w/o projection | 80.12 ± 0.00 | -0.15 | 0.4500 ± 0.0000 | -0.31 | – | [-0.52, -0.10] |" in paired
    assert "| CrossAdapt-Sample | 80.27 ± 0.00 | – | 0.4500 ± 0.0000 | – | – | – |" in paired


def test_paired_delta_table_lists_every_method_against_scratch() -> None:
    from crossadapt.transfer.experiments.report import render_paired_deltas
    from crossadapt.transfer.experiments.results import PairDeltas

    deltas = [PairedDelta(method=m, versus="Scratch", seeds=5, delta_pp=d, seed_ci_pp=(d - 0.2, d + 0.2),
                          rows_ci_pp=(d - 0.1, d + 0.1), time_ratio=r)
              for m, d, r in (("CrossAdapt-Sample", 0.31, 0.38), ("Full-Retrain", 0.5, 1.7))]
    setting = SettingResults(name="s", oracle_auc=None, pairs=[],
                             deltas=[PairDeltas(teacher="mlp-8", student="fibinet-16", deltas=deltas)])
    text = render_paired_deltas(setting)
    rows = [line for line in text.splitlines() if line.startswith("| fibinet-16")]
    assert rows == ["| fibinet-16 (teacher mlp-8) | Full-Retrain | +0.50 | [+0.30, +0.70] | [+0.40, +0.60] | 170% |",
                    "| fibinet-16 (teacher mlp-8) | CrossAdapt-Sample | +0.31 | [+0.11, +0.51] | [+0.21, +0.41] | 38% |"]
    assert "paired by seed (5 seed(s))" in text


def test_width_table_classifies_scenarios_and_delta_is_with_projection_minus_scratch() -> None:
    rows = [
        WidthRow(teacher_dim=8, student_dim=16, teacher=_stats(0.8008), scratch=_stats(0.8008),
                 without_projection=_stats(0.8012), with_projection=_stats(0.8027)),
        WidthRow(teacher_dim=32, student_dim=16, teacher=_stats(0.7992), scratch=_stats(0.8008),
                 without_projection=_stats(0.8001), with_projection=_stats(0.8016)),
    ]
    text = render_width_table(rows)
    assert "| 8 → 16 | expansion | 80.08 ± 0.00 | 80.08 ± 0.00 | 80.12 ± 0.00 | 80.27 ± 0.00 | +0.19 | – | – |" in text
    assert "| 32 → 16 | reduction |" in text and text.rstrip().endswith("+0.08 | – | – |")
    rows[0].vs_scratch = PairedDelta(method="CrossAdapt-Sample", versus="Scratch", seeds=3, delta_pp=0.19,
                                     seed_ci_pp=(-0.05, 0.43), rows_ci_pp=(0.02, 0.36))
    assert "| +0.19 | [-0.05, +0.43] | [+0.02, +0.36] |" in render_width_table(rows)
    assert " * |" not in render_width_table(rows) and "own network" not in render_width_table(rows)
    # a scenario whose student is the teacher's own network is marked: w/ ETP there is more than the projection
    same = WidthRow(teacher_dim=8, student_dim=8, teacher=_stats(0.80), scratch=_stats(0.80),
                    without_projection=_stats(0.80), with_projection=_stats(0.81), network_reused=True)
    text = render_width_table([same, *rows])
    assert "| 8 → 8 * | preservation |" in text and "| 8 → 16 | expansion |" in text
    assert "\\* The student is the teacher's own network at the teacher's width" in text


def test_method_stats_use_sample_std_over_seeds() -> None:
    runs = [
        RunRecord(setting="s", teacher="t", student="s", method="m", seed=i, auc=a, logloss=0.5, train_seconds=2.0)
        for i, a in enumerate([0.70, 0.72, 0.74])
    ]
    stats = MethodStats.from_runs(runs)
    assert stats.auc_mean == pytest.approx(0.72)
    assert stats.auc_std == pytest.approx(0.02)  # ddof=1
    assert MethodStats.from_runs(runs[:1]).auc_std == 0.0


def test_bench_markdown_contains_every_section() -> None:
    setting = SettingResults(name="synthetic", oracle_auc=None,
                             pairs=[PairResult(teacher="mlp-8", student="mlp-8", methods={"Scratch": _stats(0.7)})])
    bench = PaperBenchResults(
        preset="smoke", main=setting, wall_seconds=12.0,
        ablation=[AblationRow(name="CrossAdapt-Sample", group="full", stats=_stats(0.71))],
        widths=[WidthRow(teacher_dim=8, student_dim=8, teacher=_stats(0.7), scratch=_stats(0.7),
                         without_projection=_stats(0.7), with_projection=_stats(0.71))],
    )
    text = render_bench_markdown(bench, convergence_png="convergence.png")
    for needle in ("Table 1 — synthetic", "Where the gain goes", "Table 2 — ablation", "Table 3", "![convergence](convergence.png)",
                   "| 8 → 8 | preservation |"):
        assert needle in text
    assert "Degenerate runs" not in text
    flagged = render_bench_markdown(bench.model_copy(update={"degenerate_runs": ["s mlp-8→mlp-8 Scratch seed 1"]}))
    assert "1 run(s) ended as a constant predictor" in flagged and "- s mlp-8→mlp-8 Scratch seed 1" in flagged


def test_gain_budget_splits_the_sample_gain_into_recovered_history_and_sampling_cost() -> None:
    def setting(sample_auc: float, sample_secs: float) -> SettingResults:
        methods = {"Scratch": _stats(0.7469, secs=3.4), "Full-Retrain": _stats(0.7498, secs=5.9),
                   "CrossAdapt-Full": _stats(0.7473, secs=6.4), "CrossAdapt-Sample": _stats(sample_auc, secs=sample_secs)}
        return SettingResults(name="s", oracle_auc=None, teacher_scores={"mlp-8": _stats(0.7346)},
                              pairs=[PairResult(teacher="mlp-8", student="fibinet-16", methods=methods)])

    row = next(line for line in render_gain_budget([setting(0.7443, 1.5)]).splitlines() if line.startswith("| s |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # teacher −1.23, hist worth +0.29, CA-Full recovers +0.04, the sample costs +0.30, Sample −0.26 at 44 %.
    assert cells[2:] == ["-1.23", "+0.29", "+0.04", "+0.30", "-0.26", "44%", "not met", "not met"]
    met = next(line for line in render_gain_budget([setting(0.7500, 1.3)]).splitlines() if line.startswith("| s |"))
    assert met.rstrip(" |").endswith("+0.31 | 38% | met | not met")
    # Without Full-Retrain or CA-Full the budget has gaps, not errors; without CA-Sample the pair has no row.
    partial = setting(0.7443, 1.5)
    partial.pairs[0].methods.pop("Full-Retrain")
    assert "| – |" in render_gain_budget([partial])
    partial.pairs[0].methods.pop("CrossAdapt-Sample")
    assert not [line for line in render_gain_budget([partial]).splitlines() if line.startswith("| s |")]


def test_switch_report_lists_the_platform_operations(tmp_path) -> None:  # noqa: ANN001
    from crossadapt.transfer.experiments.report import render_switch_markdown
    from crossadapt.transfer.experiments.results import OperationTiming, Score, SwitchResults

    results = SwitchResults(
        teacher=Score(name="T", role="teacher", auc=0.7, logloss=0.5),
        student=Score(name="S", role="student", auc=0.71, logloss=0.49, train_seconds=3.0),
        teacher_checkpoint="t", student_checkpoint="s", dataset="d", platform="local",
        operations=[OperationTiming(service="projector", kind="projection", operation_id="abc", seconds=1.25,
                                    result="switch/student-projected/v000001")],
    )
    text = render_switch_markdown(results)
    assert "## Platform operations (local)" in text
    assert "| projector | projection | `abc` | SUCCEEDED | switch/student-projected/v000001 | 1.25 |" in text
    assert "Platform operations" not in render_switch_markdown(results.model_copy(update={"operations": []}))


@pytest.mark.parametrize(
    ("delta", "ci", "promote", "needles"),
    [
        (0.21, (0.05, 0.37), True, ["Promote: the student's test AUC reaches its teacher's (+0.21 pp",
                                    "beyond test-row noise"]),
        (0.02, (-0.1, 0.14), True, ["Promote", "within test-row noise of it"]),
        (-1.38, (-1.6, -1.15), False, ["Do not promote: the student's test AUC is 1.38 pp below its teacher's",
                                       "95% CI [-1.60, -1.15] over test rows; below it beyond test-row noise",
                                       "Keep serving the teacher."]),
        (-0.05, (-0.2, 0.1), False, ["Do not promote", "has not shown it reaches the teacher"]),
    ],
)
def test_verdict_promotes_only_a_student_that_reaches_its_teacher(delta: float, ci: tuple, promote: bool,
                                                                 needles: list[str]) -> None:
    from crossadapt.transfer.experiments.results import PromotionVerdict

    verdict = PromotionVerdict.judge(delta, ci)
    assert verdict.promote is promote and all(n in verdict.reason for n in needles), verdict.reason
    text = render_switch_markdown(_switch_results().model_copy(update={"verdict": verdict}))
    assert f"## Verdict: {'promote' if promote else 'do not promote'}\n\n{verdict.reason}" in text
    assert text.index("## Verdict") < text.index("## Test results")
