# SLMRec distillation: the frozen teacher's states (computed once per trained teacher), the students
# (offline and online) and the Table 4 ablation variants, from one rule; the ablation table reuses the
# offline student for the variant that keeps every term.


rule teacher_states:
    input:
        teacher="results/{dataset}/{teacher}/trainable.safetensors",
        teacher_config="results/{dataset}/{teacher}/config.json",
        splits="results/{dataset}/data/splits.parquet",
        negatives="results/{dataset}/data/negatives.parquet",
        stats="results/{dataset}/data/stats.json",
        item_embeddings="results/{dataset}/sasrec/item_embeddings.safetensors",
        backbone=backbone_dir,
    output:
        states="results/{dataset}/{teacher}/states.safetensors",
        manifest="results/{dataset}/{teacher}/states.manifest.json",
    wildcard_constraints:
        teacher=targets.TEACHER_PATTERN,
    params:
        samples=states_samples,
        distill=states_distill,
        backbone=settings("backbone", keys=("precision",)),
    log:
        "results/{dataset}/logs/{teacher}.states.log",
    benchmark:
        "results/{dataset}/logs/{teacher}.states.benchmark.tsv"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("teacher_states"),
        mem_mb=lambda wildcards, attempt: 32000 * attempt,
        runtime=120,
        gpu=1,
        eval_batch_size=512,
    conda:
        "../envs/cuda.yaml"
    script:
        "../workflow_scripts/teacher_states.py"


rule student:
    input:
        unpack(student_teacher_states),
        splits="results/{dataset}/data/splits.parquet",
        negatives="results/{dataset}/data/negatives.parquet",
        stats="results/{dataset}/data/stats.json",
        item_embeddings="results/{dataset}/sasrec/item_embeddings.safetensors",
        backbone=backbone_dir,
    output:
        model="results/{dataset}/{student}/trainable.safetensors",
        config="results/{dataset}/{student}/config.json",
        metrics="results/{dataset}/{student}/metrics.json",
        ranks="results/{dataset}/{student}/ranks.parquet",
        train_log="results/{dataset}/{student}/train_log.csv",
        manifest="results/{dataset}/{student}/manifest.json",
    wildcard_constraints:
        student=targets.STUDENT_PATTERN,
    params:
        target=lambda wildcards: wildcards.student,
        student=settings("student"),
        distill=student_distill,
        teacher=online_teacher,
        backbone=backbone_loading,
        prompt=settings("prompt"),
        evaluate=settings("evaluate"),
        checkpoints=checkpoints,
    log:
        "results/{dataset}/logs/{student}.log",
    benchmark:
        "results/{dataset}/logs/{student}.benchmark.tsv"
    # One CPU thread per job: the accelerator does the work, and on a CPU-only box parallel jobs
    # (e.g. the ablation variants) use the cores better than threads inside one small model.
    threads: 1
    resources:
        try_number=retry_unless_bad_input("student"),
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
        unpack(ablation_rows),
    output:
        table=report(
            "results/{dataset}/ablation/metrics.json",
            category="Results",
            labels={"dataset": "{dataset}", "table": "ablation (Table 4)"},
        ),
        manifest="results/{dataset}/ablation/manifest.json",
    log:
        "results/{dataset}/logs/ablation.log",
    benchmark:
        "results/{dataset}/logs/ablation.benchmark.tsv"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("ablation"),
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=5,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/ablation.py"
