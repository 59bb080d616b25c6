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
        ranks="results/{dataset}/sasrec/ranks.parquet",
        train_log="results/{dataset}/sasrec/train_log.csv",
        manifest="results/{dataset}/sasrec/manifest.json",
    params:
        target="sasrec",
        sasrec=settings("sasrec", drop=("authors_protocol",)),
        authors_protocol=False,
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


# The SLMRec authors' SASRec (report.sasrec_authors): their settings, one target per user; its own row.
use rule sasrec as sasrec_authors with:
    output:
        model="results/{dataset}/sasrec_authors/model.safetensors",
        item_embeddings="results/{dataset}/sasrec_authors/item_embeddings.safetensors",
        metrics="results/{dataset}/sasrec_authors/metrics.json",
        ranks="results/{dataset}/sasrec_authors/ranks.parquet",
        train_log="results/{dataset}/sasrec_authors/train_log.csv",
        manifest="results/{dataset}/sasrec_authors/manifest.json",
    params:
        target="sasrec_authors",
        sasrec=settings("sasrec"),
        authors_protocol=True,
        evaluate=settings("evaluate"),
        checkpoints=checkpoints,
    log:
        "results/{dataset}/logs/sasrec_authors.log",
    benchmark:
        "results/{dataset}/logs/sasrec_authors.benchmark.tsv"


rule popularity:
    input:
        splits="results/{dataset}/data/splits.parquet",
        negatives="results/{dataset}/data/negatives.parquet",
        stats="results/{dataset}/data/stats.json",
    output:
        metrics="results/{dataset}/popularity/metrics.json",
        ranks="results/{dataset}/popularity/ranks.parquet",
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
