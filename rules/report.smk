# The per-dataset results: the metrics table (Tables 2 and 5) and the report with its figures.


rule metrics:
    input:
        unpack(result_rows),
        stats=layout.data_file("stats"),
    output:
        table=report(
            layout.table(),
            category="Results",
            labels={"dataset": "{dataset}", "table": "metrics (Tables 2 and 5)"},
        ),
        manifest=layout.table("manifest"),
    log:
        layout.log("metrics"),
    benchmark:
        layout.benchmark("metrics")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("metrics"),
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=5,
    params:
        dataset=lambda wildcards: wildcards.dataset,
        headline=headline_pair,
    script:
        "../workflow_scripts/run_stage.py"


rule report:
    input:
        unpack(report_ablation),
        unpack(report_direct),
        table=layout.table(),
        ranks=compared_ranks,
        train_logs=train_logs,
        sweep=layer_sweep,
        negatives=layout.data_file("negatives_manifest"),
    output:
        report=report(layout.table("report"), category="Results", labels={"dataset": "{dataset}", "file": "report"}),
        curves=report(
            layout.table("training_curves"),
            category="Results",
            labels={"dataset": "{dataset}", "figure": "training curves"},
        ),
        layers=report(
            layout.table("layer_sweep"),
            category="Results",
            labels={"dataset": "{dataset}", "figure": "metrics against layers"},
        ),
    log:
        layout.log("report"),
    benchmark:
        layout.benchmark("report")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("report"),
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=5,
    params:
        random_backbone=random_backbone,
        settings=report_settings,
        comparisons=report_comparisons,
        ranked=compared_targets,
    script:
        "../workflow_scripts/run_stage.py"
