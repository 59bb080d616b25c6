# Data stages: raw file (download or synthesize) -> preprocess -> negatives.


rule synthesize:
    output:
        raw="results/{dataset}/raw/synthetic_5.json.gz",
        manifest="results/{dataset}/raw/synthetic_5.json.gz.manifest.json",
    params:
        source=lambda wildcards: source(wildcards.dataset),
    log:
        "results/{dataset}/logs/synthesize.log",
    benchmark:
        "results/{dataset}/logs/synthesize.benchmark.tsv"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("synthesize"),
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=15,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/synthesize.py"


rule download:
    output:
        raw="results/{dataset}/raw/{file}",
        manifest="results/{dataset}/raw/{file}.manifest.json",
    params:
        urls=lambda wildcards: source(wildcards.dataset)["urls"],
        sha256=lambda wildcards: source(wildcards.dataset).get("sha256"),
    wildcard_constraints:
        file=r"(?!synthetic_5\.json\.gz$)[^/]+",
    log:
        "results/{dataset}/logs/download_{file}.log",
    benchmark:
        "results/{dataset}/logs/download_{file}.benchmark.tsv"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("download"),
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=240,
    retries: 2
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/download.py"


rule preprocess:
    input:
        raw=raw_file,
    output:
        interactions="results/{dataset}/data/interactions.parquet",
        user_ids="results/{dataset}/data/users.parquet",
        item_ids="results/{dataset}/data/items.parquet",
        splits="results/{dataset}/data/splits.parquet",
        stats=report(
            "results/{dataset}/data/stats.json",
            category="Data",
            labels={"dataset": "{dataset}", "file": "statistics"},
        ),
        manifest="results/{dataset}/data/manifest.json",
    params:
        preprocess=settings("preprocess"),
        source=parse_options,
    log:
        "results/{dataset}/logs/preprocess.log",
    benchmark:
        "results/{dataset}/logs/preprocess.benchmark.tsv"
    threads: 2
    resources:
        try_number=retry_unless_bad_input("preprocess"),
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=60,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/preprocess.py"


rule negatives:
    input:
        splits="results/{dataset}/data/splits.parquet",
        stats="results/{dataset}/data/stats.json",
        user_ids="results/{dataset}/data/users.parquet",
    output:
        negatives="results/{dataset}/data/negatives.parquet",
        manifest="results/{dataset}/data/negatives.manifest.json",
    params:
        negatives=settings("negatives"),
    log:
        "results/{dataset}/logs/negatives.log",
    benchmark:
        "results/{dataset}/logs/negatives.benchmark.tsv"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("negatives"),
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=60,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/negatives.py"
