# SLMRec distillation: the student (offline and online) and the Table 4 ablation, from one rule.


rule student:
    input:
        splits="results/{dataset}/data/splits.parquet",
        negatives="results/{dataset}/data/negatives.parquet",
        stats="results/{dataset}/data/stats.json",
        item_embeddings="results/{dataset}/sasrec/item_embeddings.safetensors",
        backbone=backbone_dir,
        teacher=teacher_artifact,
    output:
        model="results/{dataset}/{student}/trainable.safetensors",
        config="results/{dataset}/{student}/config.json",
        metrics="results/{dataset}/{student}/metrics.json",
        train_log="results/{dataset}/{student}/train_log.csv",
        manifest="results/{dataset}/{student}/manifest.json",
    wildcard_constraints:
        student=r"student(_online)?|ablation/(ce|ce_cos|ce_cos_l2|ce_cos_ms|all)",
    params:
        student=settings("student"),
        teacher=settings("teacher"),
        distill=distill_settings,
        backbone=settings("backbone"),
        prompt=settings("prompt"),
        max_len=lambda wildcards: settings("preprocess")(wildcards)["max_len"],
        evaluate=settings("evaluate"),
        checkpoints=lambda wildcards: f"results/{wildcards.dataset}/checkpoints/{wildcards.student}",
    log:
        "results/{dataset}/logs/{student}.log",
    benchmark:
        "results/{dataset}/logs/{student}.benchmark.tsv"
    # One CPU thread per job: the accelerator does the work, and on a CPU-only box parallel jobs
    # (e.g. the ablation variants) use the cores better than threads inside one small model.
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 32000 * attempt,
        runtime=720,
        gpu=1,
        eval_batch_size=512,
        per_device_batch_size=0,
    conda:
        "../envs/cuda.yaml"
    script:
        "../workflow_scripts/student.py"


rule ablation:
    input:
        expand("results/{{dataset}}/ablation/{variant}/metrics.json", variant=ABLATION_VARIANTS),
    output:
        table=report(
            "results/{dataset}/ablation/metrics.json",
            category="Results",
            labels={"dataset": "{dataset}", "table": "ablation (Table 4)"},
        ),
    log:
        "results/{dataset}/logs/ablation.log",
    benchmark:
        "results/{dataset}/logs/ablation.benchmark.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=5,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/ablation.py"
