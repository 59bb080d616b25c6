# SASRec pretraining and the popularity reference, both scored by the shared evaluation routine.


rule sasrec:
    input:
        splits="results/{dataset}/data/splits.parquet",
        negatives="results/{dataset}/data/negatives.parquet",
        stats="results/{dataset}/data/stats.json",
    output:
        model="results/{dataset}/sasrec/model.safetensors",
        item_embeddings="results/{dataset}/sasrec/item_embeddings.safetensors",
        metrics="results/{dataset}/sasrec/metrics.json",
        train_log="results/{dataset}/sasrec/train_log.csv",
        manifest="results/{dataset}/sasrec/manifest.json",
    params:
        target="sasrec",
        sasrec=settings("sasrec"),
        evaluate=settings("evaluate"),
        checkpoints=checkpoints,
    log:
        "results/{dataset}/logs/sasrec.log",
    benchmark:
        "results/{dataset}/logs/sasrec.benchmark.tsv"
    threads: 2
    resources:
        try_number=retry_unless_bad_input("sasrec"),
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=240,
        gpu=1,
        eval_batch_size=512,
    conda:
        "../envs/cuda.yaml"
    script:
        "../workflow_scripts/sasrec.py"


rule popularity:
    input:
        splits="results/{dataset}/data/splits.parquet",
        negatives="results/{dataset}/data/negatives.parquet",
        stats="results/{dataset}/data/stats.json",
    output:
        metrics="results/{dataset}/popularity/metrics.json",
        manifest="results/{dataset}/popularity/manifest.json",
    params:
        target="popularity",
        evaluate=settings("evaluate"),
    log:
        "results/{dataset}/logs/popularity.log",
    benchmark:
        "results/{dataset}/logs/popularity.benchmark.tsv"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("popularity"),
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=30,
        eval_batch_size=512,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/popularity.py"
