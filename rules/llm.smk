# The LLM recommenders: their backbones (the tiny preset built per dataset, converted GGUF files and
# random-init controls shared by every dataset), the E4SRec-style teacher, and direct inference from its
# intermediate layers (Figure 2).


rule backbone:
    output:
        directory=directory("results/{dataset}/backbone"),
    params:
        preset=lambda wildcards: dataset_settings(wildcards.dataset, "backbone")["preset"],
        seed=lambda wildcards: dataset_settings(wildcards.dataset, "backbone")["seed"],
        prompt=settings("prompt"),
    log:
        "results/{dataset}/logs/backbone.log",
    benchmark:
        "results/{dataset}/logs/backbone.benchmark.tsv"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("backbone"),
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/backbone.py"


rule convert_backbone:
    input:
        source=lambda wildcards: CONVERTED_BACKBONES[wildcards.backbone][0](),
    output:
        directory=directory("results/backbones/{backbone}"),
    params:
        init=lambda wildcards: CONVERTED_BACKBONES[wildcards.backbone][1]["init"],
        seed=lambda wildcards: CONVERTED_BACKBONES[wildcards.backbone][1]["seed"],
    wildcard_constraints:
        backbone="|".join(map(re.escape, CONVERTED_BACKBONES)) or "(?!)",
    log:
        "results/backbones/logs/{backbone}.log",
    benchmark:
        "results/backbones/logs/{backbone}.benchmark.tsv"
    threads: 2
    resources:
        try_number=retry_unless_bad_input("convert_backbone"),
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=30,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/convert_backbone.py"


rule teacher:
    input:
        splits="results/{dataset}/data/splits.parquet",
        negatives="results/{dataset}/data/negatives.parquet",
        stats="results/{dataset}/data/stats.json",
        item_embeddings="results/{dataset}/sasrec/item_embeddings.safetensors",
        backbone=backbone_dir,
    output:
        model="results/{dataset}/{teacher}/trainable.safetensors",
        config="results/{dataset}/{teacher}/config.json",
        metrics="results/{dataset}/{teacher}/metrics.json",
        ranks="results/{dataset}/{teacher}/ranks.parquet",
        train_log="results/{dataset}/{teacher}/train_log.csv",
        manifest="results/{dataset}/{teacher}/manifest.json",
    wildcard_constraints:
        teacher=targets.TEACHER_PATTERN,
    params:
        target=lambda wildcards: wildcards.teacher,
        # `layers` comes from the target (teacher_l{n}), so teacher.layers reruns only `teacher`.
        teacher=settings("teacher", drop=("layers",)),
        layers=teacher_layers,
        backbone=backbone_loading,
        prompt=settings("prompt"),
        evaluate=settings("evaluate"),
        checkpoints=checkpoints,
    log:
        "results/{dataset}/logs/{teacher}.log",
    benchmark:
        "results/{dataset}/logs/{teacher}.benchmark.tsv"
    # One CPU thread per job: the accelerator does the work, and on a CPU-only box parallel jobs
    # (e.g. the ablation variants) use the cores better than threads inside one small model.
    threads: 1
    resources:
        try_number=retry_unless_bad_input("teacher"),
        mem_mb=lambda wildcards, attempt: 32000 * attempt,
        runtime=720,
        gpu=1,
        eval_batch_size=512,
        per_device_batch_size=0,
    conda:
        "../envs/cuda.yaml"
    script:
        "../workflow_scripts/teacher.py"


rule direct_inference:
    input:
        teacher="results/{dataset}/teacher/trainable.safetensors",
        teacher_config="results/{dataset}/teacher/config.json",
        splits="results/{dataset}/data/splits.parquet",
        negatives="results/{dataset}/data/negatives.parquet",
        stats="results/{dataset}/data/stats.json",
        item_embeddings="results/{dataset}/sasrec/item_embeddings.safetensors",
        backbone=backbone_dir,
    output:
        table="results/{dataset}/teacher/direct_inference.json",
        ranks="results/{dataset}/teacher/direct_inference.ranks.parquet",
        manifest="results/{dataset}/teacher/direct_inference.manifest.json",
    params:
        layers=direct_layers,
        teacher=settings("teacher", keys=("max_len",)),
        evaluate=settings("evaluate"),
        backbone=settings("backbone", keys=("precision",)),
    log:
        "results/{dataset}/logs/direct_inference.log",
    benchmark:
        "results/{dataset}/logs/direct_inference.benchmark.tsv"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("direct_inference"),
        mem_mb=lambda wildcards, attempt: 32000 * attempt,
        runtime=120,
        gpu=1,
        eval_batch_size=512,
    conda:
        "../envs/cuda.yaml"
    script:
        "../workflow_scripts/direct_inference.py"
