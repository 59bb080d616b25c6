"""The experiment summary: seeds aggregated as mean ± sd, paired differences, loss balance, wall times."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers_data import INTERVAL

from slmrec import layout
from slmrec.errors import ArtifactError
from slmrec.evaluate import RANK_SCHEMA
from slmrec.io import write_parquet
from slmrec.metrics import METRIC_NAMES, MetricsRow
from slmrec.summary import (
    Arm,
    PrecisionArms,
    Row,
    ablation_table,
    accuracy_table,
    alignment_table,
    benchmark_times,
    layer_table,
    linked_figure,
    loss_balance,
    mean_std,
    precision_table,
    replace_generated,
    row_comparisons,
    validation_curves,
    wall_times,
)

METRICS = ("HR@1", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "MRR")


def write_row(
    results: Path, dataset: str, target: str, model: str, mrr: float, layers: int = 4, best_step: int = 10, **details
) -> None:
    scores = {m: mrr + i for i, m in enumerate(METRICS)}
    path = results / dataset / target / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    MetricsRow(
        model=model,
        target=target,
        layers=layers,
        valid=scores,
        test=scores,
        params={"total": 10, "trainable": 2_000_000, "inference": 8},
        train_seconds=120.0,
        inference_seconds=3.0,
        best_step=best_step,
        best_valid_mrr=mrr,
        details=details,
    ).write(path)


def test_seeds_are_mean_and_sample_sd_and_missing_seeds_are_counted(tmp_path):
    arm = Arm("pretrained", ("a", "a_s2", "a_s3"))
    for dataset, mrr in (("a", 10.0), ("a_s2", 12.0), ("a_s3", 17.0)):
        write_row(tmp_path, dataset, "teacher", "E4SRec_8", mrr)
    write_row(tmp_path, "a", "teacher_l2", "E4SRec_2", 5.0)  # one seed only
    table = accuracy_table(tmp_path, [Row(arm, "teacher"), Row(arm, "teacher_l2", "{model}, shallow"), Row(arm, "x")])
    lines = table.splitlines()
    assert lines[0] == "| Model | " + " | ".join(METRIC_NAMES) + " | seeds |"
    sd = statistics.stdev([10.0, 12.0, 17.0])
    assert lines[2].startswith(f"| E4SRec_8 | 13.00 ± {sd:.2f} |") and lines[2].endswith("| 3 |")
    assert lines[3].startswith("| E4SRec_2, shallow | 5.00 |") and lines[3].endswith("| 1 |")
    assert len(lines) == 4  # the target no seed has is left out
    assert mean_std([1.0]) == "1.00"


def write_ranks(results: Path, dataset: str, target: str, ranks: np.ndarray) -> None:
    """A model's ranks table: the same 0-based ranks of the same users on both splits."""
    users = np.arange(len(ranks))
    frame = pl.concat(
        pl.DataFrame({"split": s, "user": users, "item": users, "rank": ranks, "full_rank": None}, schema=RANK_SCHEMA)
        for s in ("valid", "test")
    )
    frame.write_parquet(results / dataset / target / "ranks.parquet")


def test_row_comparisons_pair_each_seed_with_the_same_seed_of_the_other_arm(tmp_path):
    """Seed 2 of the control has no ranks, so seed 2 of the other arm is left out too: the difference is of the
    per-user means over seeds 1 and 3 alone. A pair with no seed ranked is named as not run."""
    pretrained, random = Arm("p", ("a", "a_s2", "a_s3")), Arm("r", ("b", "b_s2", "b_s3"))
    rng = np.random.default_rng(0)
    ranks = {dataset: rng.integers(0, 100, size=400) for dataset in ("a", "a_s2", "a_s3", "b", "b_s3")}
    ranks["a_s2"][:] = 0  # the seed that must not count: every user's item first
    for dataset in (*pretrained.datasets, *random.datasets):
        write_row(tmp_path, dataset, "teacher", "E4SRec_8", 10.0)
        if dataset in ranks:
            write_ranks(tmp_path, dataset, "teacher", ranks[dataset])
    control = Row(random, "teacher", "{model}, random init")
    table = row_comparisons(tmp_path, [(Row(pretrained, "teacher"), control), (Row(pretrained, "student"), control)])
    mrr = {dataset: 100 / (r + 1) for dataset, r in ranks.items()}  # a user's MRR in points, from a 0-based rank
    expected = np.mean((mrr["a"] + mrr["a_s3"]) / 2 - (mrr["b"] + mrr["b_s3"]) / 2)
    row = table.splitlines()[2]
    assert row.startswith("| E4SRec_8 − E4SRec_8, random init | 2 × 400 | "), table
    assert re.fullmatch(rf"(\| {INTERVAL} ){{4}}\| .+ \|", row.split(" | 2 × 400 ")[1]), row
    assert row.split(" | ")[4].startswith(f"{expected:+.2f} [")  # valid MRR, the 5th column
    assert "*student (p) − teacher, random init (r): not run yet.*" in table


def test_row_comparisons_give_the_verdict_on_the_first_metric(tmp_path):
    """Half the users get their item first under A on every seed and split: A − B holds; B − A is reversed."""
    pretrained, random = Arm("p", ("a", "a_s2")), Arm("r", ("b", "b_s2"))
    rng = np.random.default_rng(0)
    for dataset in (*pretrained.datasets, *random.datasets):
        write_row(tmp_path, dataset, "teacher", "E4SRec_8", 10.0)
        ranks = rng.integers(0, 100, size=400)
        if dataset.startswith("a"):
            ranks[:200] = 0
        write_ranks(tmp_path, dataset, "teacher", ranks)
    better, worse = Row(pretrained, "teacher"), Row(random, "teacher", "{model}, random init")
    lines = row_comparisons(tmp_path, [(better, worse), (worse, better)]).splitlines()
    assert lines[0] == "| A − B | seeds × users | valid NDCG@10 | test NDCG@10 | valid MRR | test MRR | verdict |"
    assert lines[2].startswith("| E4SRec_8 − E4SRec_8, random init | 2 × 400 | +") and lines[2].endswith("| holds |")
    assert lines[3].startswith("| E4SRec_8, random init − E4SRec_8 | 2 × 400 | -")
    assert lines[3].endswith("| reversed: B beats A |")


def test_ablation_table_takes_the_full_variant_from_the_student(tmp_path):
    arm = Arm("p", ("a",))
    write_row(tmp_path, "a", "ablation/ce", "SLMRec_ce 4", 3.0)
    write_row(tmp_path, "a", "student", "SLMRec 4←8", 4.0)
    rows = [line.split(" | ")[0] for line in ablation_table(tmp_path, arm).splitlines()[2:]]
    assert rows == ["| CE", "| CE + cos + L2 + MS"]


def test_loss_balance_weighs_each_term_and_gives_its_share(tmp_path):
    weights = {"cos_weight": 1.0, "l2_weight": 0.1, "multi_supervision_weight": 0.5}
    write_row(tmp_path, "a", "student", "SLMRec 4←8", 4.0, distill=weights)
    pl.DataFrame(
        {
            "step": [10, 20],
            "loss_ce": [5.0, 4.0],
            "loss_cos": [0.5, 0.2],
            "loss_l2": [100.0, 40.0],
            "loss_ms": [9.0, 8.0],
        }
    ).write_csv(tmp_path / "a" / "student" / "train_log.csv")
    lines = loss_balance(tmp_path, "a").splitlines()
    # first step: 5 + 0.5 + 10 + 4.5 = 20
    assert "| first: L2 | 100.000 | 0.1 | 10.000 | 50% |" in lines
    assert "| first: CE | 5.000 | 1 | 5.000 | 25% |" in lines
    assert any(line.startswith("| last (step 20): L2 | 40.000 |") for line in lines)
    assert loss_balance(tmp_path, "nothing") == "not run yet\n"


def test_validation_curves_give_each_seed_a_line_and_bold_its_selected_step(tmp_path):
    arm = Arm("p", ("a", "a_s2", "a_s3"))
    curves = (("a", [25, 50], [20.0, 21.5], 10), ("a_s2", [25, 50, 75, 100], [19.0, 23.0, 22.0, 22.5], 50))
    for dataset, steps, mrr, best in curves:  # a: its best step is on no line's steps, so nothing is bold
        write_row(tmp_path, dataset, "student", "SLMRec 4←8", 1.0, best_step=best)
        pl.DataFrame({"step": steps, "mrr": mrr}).write_csv(tmp_path / dataset / "student" / "train_log.csv")
    lines = validation_curves(tmp_path, [Row(arm, "student", "{model}, distilled"), Row(arm, "x")]).splitlines()
    assert lines[0] == "| Model (dataset) | 25 | 50 | 75 | 100 |"
    assert lines[2] == "| SLMRec 4←8, distilled (a) | 20.00 | 21.50 | - | - |"
    assert lines[3] == "| SLMRec 4←8, distilled (a_s2) | 19.00 | **23.00** | 22.00 | 22.50 |"
    assert len(lines) == 4  # a_s3 and the target no seed has are left out
    write_row(tmp_path, "a", "sasrec", "SASRec", 1.0)  # trained by early stopping, with no step log
    with pytest.raises(ValueError, match=r"a/sasrec/train_log.csv: no training log"):
        validation_curves(tmp_path, [Row(arm, "sasrec")])


def test_layer_table_joins_the_trained_sweep_and_direct_inference(tmp_path):
    write_row(tmp_path, "a", "teacher_l2", "E4SRec_2", 5.0, layers=2)
    write_row(tmp_path, "a", "teacher", "E4SRec_8", 9.0, layers=8)
    direct = tmp_path / "direct.json"
    scores = {m: 1.0 for m in METRICS}
    direct.write_text(json.dumps({"teacher": "E4SRec_8", "layers": {"4": {"test": scores}, "8": {"test": scores}}}))
    lines = layer_table(tmp_path, "a", ["teacher_l2", "teacher"], direct).splitlines()[2:]
    assert lines == [
        "| 2 | 9.00 | 10.00 | - | - |",
        "| 4 | - | - | 1.00 | 1.00 |",
        "| 8 | 13.00 | 14.00 | 1.00 | 1.00 |",
    ]


def test_wall_times_sum_every_job_by_kind(tmp_path):
    logs = tmp_path / "a" / "logs"
    (logs / "ablation").mkdir(parents=True)
    for name, seconds in (("teacher_l2", 600), ("teacher_l4", 1200), ("ablation/ce", 300), ("sasrec", 60)):
        (logs / f"{name}.benchmark.tsv").write_text(f"s\th:m:s\tcpu_time\n{seconds}\t0:00:00\t{seconds / 2}\n")
    line = wall_times(tmp_path, ["a", "missing"]).splitlines()[2]
    assert line == "| a | 0.60 | teacher_l* 30, ablation 5, sasrec 1 |"


def test_benchmark_times_take_each_files_last_run_longest_first_and_name_a_bad_file(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "sasrec.benchmark.tsv").write_text("s\tcpu_time\n50\t40\n60.5\t70.25\n")  # rerun
    (tmp_path / "logs" / "teacher.benchmark.tsv").write_text("s\tcpu_time\n100\t90\n")
    jobs = benchmark_times(tmp_path)
    assert jobs.rows() == [("logs/teacher", 100.0, 90.0), ("logs/sasrec", 60.5, 70.25)]
    assert benchmark_times(tmp_path / "nothing").is_empty()
    (tmp_path / "logs" / "broken.benchmark.tsv").write_text("s\th:m:s\n5\t0:00:05\n")
    with pytest.raises(ArtifactError, match=r"broken.benchmark.tsv: expected Snakemake's benchmark columns"):
        benchmark_times(tmp_path)


def test_generated_blocks_are_replaced_and_prose_kept():
    doc = "intro\n<!-- t -->\nold\n<!-- /t -->\nverdict\n"
    assert replace_generated(doc, {"t": lambda: "new\n"}) == "intro\n<!-- t -->\nnew\n<!-- /t -->\nverdict\n"
    with pytest.raises(ValueError, match="no <!-- u --> … <!-- /u --> block"):
        replace_generated(doc, {"t": lambda: "", "u": lambda: ""})
    with pytest.raises(ValueError, match=r"blocks \['v'\] have nothing to fill them"):
        replace_generated(doc + "<!-- v -->\nstale\n<!-- /v -->\n", {"t": lambda: ""})


def test_a_figure_is_linked_once_drawn_and_named_until_then(tmp_path):
    doc, made = tmp_path / "docs" / "page.md", tmp_path / "results" / "plot.png"
    pending = linked_figure(made, doc, "figures/plot.png", "Figure 2")
    assert pending == "*Figure 2: not drawn yet (the report rule of results makes plot.png).*\n"
    assert not (tmp_path / "docs").exists()
    made.parent.mkdir()
    made.write_bytes(b"\x89PNG")
    assert linked_figure(made, doc, "figures/plot.png", "Figure 2") == "![Figure 2](figures/plot.png)\n"
    assert (tmp_path / "docs" / "figures" / "plot.png").read_bytes() == b"\x89PNG"


def test_alignment_table_shows_each_block_and_the_sums_the_loss_terms_use(tmp_path):
    path = tmp_path / "alignment.json"
    assert "not measured yet" in alignment_table(path)
    block = {"student_norm": 30.0, "teacher_norm": 40.0}
    rows = [
        {
            "model": "untrained 2-layer student",
            "blocks": [
                {"student_layer": 1, "teacher_layer": 4, "cos_distance": 0.5, "l2_distance": 30.0, **block},
                {"student_layer": 2, "teacher_layer": 8, "cos_distance": 0.25, "l2_distance": 20.0, **block},
            ],
        },
    ]
    path.write_text(json.dumps({"dataset": "d", "teachers": {"teacher": {"teacher_layers": 8, "rows": rows}}}))
    table = alignment_table(path).splitlines()
    assert table[2] == (
        "| untrained 2-layer student | E4SRec_8 (1→4, 2→8) | 0.500 / 0.250 | 0.750 | 30.0 of 40 / 20.0 of 40 | 50.0 |"
    )


def test_the_precision_table_pairs_each_seed_per_user_and_judges_against_the_tolerance(tmp_path):
    """Two seeds of float32 and bf16 models: each seed's row, and bf16 − float32 per user with its verdict; a seed
    not run is said so."""
    arms = PrecisionArms("teacher_l8", ("", "_s2", "_s3"))
    rng = np.random.default_rng(0)
    for seed in ("", "_s2"):
        base = rng.integers(0, 100, size=400)
        for arm, ranks in (("ml100k_fp32", base), ("ml100k_bf16", base.copy())):
            write_row(tmp_path, f"{arm}{seed}", "teacher_l8", "E4SRec_8", 20.0)
            write_parquet(
                Path(layout.rescored_ranks(f"{arm}{seed}", "teacher_l8", tmp_path)),
                pl.DataFrame({"valid": ranks, "test": ranks}),
            )
            logs = tmp_path / f"{arm}{seed}" / "logs"
            logs.mkdir(parents=True)
            minutes = 30 if arm.endswith("fp32") else 20
            (logs / "teacher_l8.benchmark.tsv").write_text(f"s\tcpu_time\n{minutes * 60}\t1\n")
    table = precision_table(tmp_path, arms)
    assert "| 1 | 24.00 / 24.00 | 24.00 / 24.00 | 30 | 20 | 1.50x |" in table  # write_row: NDCG@10 = mrr + 4
    assert "| 3 | not run yet |" in table
    assert "| test | NDCG@10 | +0.00 [+0.00, +0.00], p = 1 | 2 | 400 | acceptable |" in table
