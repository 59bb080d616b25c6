# Data stages: raw file (download or synthesize) -> preprocess -> negatives.


rule synthesize:
    output:
        raw=layout.raw(layout.SYNTHETIC_FILE),
        manifest=layout.raw(layout.SYNTHETIC_FILE, manifest=True),
    log:
        layout.log("synthesize"),
    benchmark:
        layout.benchmark("synthesize")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("synthesize"),
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=15,
    params:
        source=lambda wildcards: source(wildcards.dataset),
    script:
        "../workflow_scripts/run_stage.py"


rule download:
    output:
        raw=layout.raw("{file}"),
        manifest=layout.raw("{file}", manifest=True),
    log:
        layout.log("download_{file}"),
    benchmark:
        layout.benchmark("download_{file}")
    wildcard_constraints:
        file=r"(?!synthetic_5\.json\.gz$)[^/]+",
    retries: 2
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("download"),
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=240,
    params:
        urls=lambda wildcards: source(wildcards.dataset)["urls"],
        sha256=lambda wildcards: source(wildcards.dataset).get("sha256"),
    script:
        "../workflow_scripts/run_stage.py"


rule preprocess:
    input:
        raw=raw_file,
    output:
        interactions=layout.data_file("interactions"),
        user_ids=layout.data_file("user_ids"),
        item_ids=layout.data_file("item_ids"),
        splits=layout.data_file("splits"),
        stats=report(layout.data_file("stats"), category="Data", labels={"dataset": "{dataset}", "file": "statistics"}),
        manifest=layout.data_file("manifest"),
    log:
        layout.log("preprocess"),
    benchmark:
        layout.benchmark("preprocess")
    conda:
        "../envs/cpu.yaml"
    threads: 2
    resources:
        try_number=retry_unless_bad_input("preprocess"),
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=60,
    params:
        preprocess=settings("preprocess"),
        source=parse_options,
    script:
        "../workflow_scripts/run_stage.py"


rule negatives:
    input:
        splits=layout.data_file("splits"),
        stats=layout.data_file("stats"),
        user_ids=layout.data_file("user_ids"),
    output:
        negatives=layout.data_file("negatives"),
        manifest=layout.data_file("negatives_manifest"),
    log:
        layout.log("negatives"),
    benchmark:
        layout.benchmark("negatives")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("negatives"),
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=60,
    params:
        negatives=settings("negatives"),
    script:
        "../workflow_scripts/run_stage.py"
