# The per-dataset results: the metrics table (Tables 2 and 5) and the report with its figures.


rule metrics:
    input:
        unpack(result_rows),
        stats="results/{dataset}/data/stats.json",
    output:
        table=report(
            "results/{dataset}/metrics.json",
            category="Results",
            labels={"dataset": "{dataset}", "table": "metrics (Tables 2 and 5)"},
        ),
        manifest="results/{dataset}/manifest.json",
    params:
        dataset=lambda wildcards: wildcards.dataset,
        headline=headline_pair,
    log:
        "results/{dataset}/logs/metrics.log",
    benchmark:
        "results/{dataset}/logs/metrics.benchmark.tsv"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("metrics"),
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=5,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/metrics.py"


rule report:
    input:
        unpack(report_ablation),
        unpack(report_direct),
        table="results/{dataset}/metrics.json",
        ranks=compared_ranks,
        train_logs=train_logs,
        sweep=layer_sweep,
        negatives="results/{dataset}/data/negatives.manifest.json",
    output:
        report=report(
            "results/{dataset}/report.md", category="Results", labels={"dataset": "{dataset}", "file": "report"}
        ),
        curves=report(
            "results/{dataset}/training_curves.png",
            category="Results",
            labels={"dataset": "{dataset}", "figure": "training curves"},
        ),
        layers=report(
            "results/{dataset}/layer_sweep.png",
            category="Results",
            labels={"dataset": "{dataset}", "figure": "metrics against layers"},
        ),
    params:
        random_backbone=random_backbone,
        settings=report_settings,
        comparisons=report_comparisons,
        ranked=compared_targets,
    log:
        "results/{dataset}/logs/report.log",
    benchmark:
        "results/{dataset}/logs/report.benchmark.tsv"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("report"),
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=5,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/report.py"
