# The LLM recommenders: their backbones (the tiny preset built per dataset, converted GGUF files and
# random-init controls shared by every dataset), the E4SRec-style teacher, and direct inference from its
# intermediate layers (Figure 2).


rule backbone:
    output:
        directory=directory(layout.backbone()),
    log:
        layout.log("backbone"),
    benchmark:
        layout.benchmark("backbone")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("backbone"),
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=10,
    params:
        preset=lambda wildcards: dataset_settings(wildcards.dataset, "backbone")["preset"],
        seed=lambda wildcards: dataset_settings(wildcards.dataset, "backbone")["seed"],
        prompt=settings("prompt"),
    script:
        "../workflow_scripts/run_stage.py"


rule convert_backbone:
    input:
        unpack(conversion_inputs),
    output:
        directory=directory(layout.converted_backbone("{backbone}")),
    log:
        layout.log("{backbone}", layout.BACKBONES),
    benchmark:
        layout.benchmark("{backbone}", layout.BACKBONES)
    wildcard_constraints:
        backbone="|".join(map(re.escape, CONVERTED_BACKBONES)) or "(?!)",
    conda:
        "../envs/cpu.yaml"
    threads: 2
    resources:
        try_number=retry_unless_bad_input("convert_backbone"),
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=30,
    params:
        init=lambda wildcards: CONVERTED_BACKBONES[wildcards.backbone][1]["init"],
        seed=lambda wildcards: CONVERTED_BACKBONES[wildcards.backbone][1]["seed"],
    script:
        "../workflow_scripts/run_stage.py"


rule teacher:
    input:
        **layout.data_inputs(),
        item_embeddings=layout.item_embeddings(),
        backbone=backbone_dir,
    output:
        **layout.model_outputs("{teacher}"),
    log:
        layout.log("{teacher}"),
    benchmark:
        layout.benchmark("{teacher}")
    wildcard_constraints:
        teacher=targets.TEACHER_PATTERN,
    conda:
        "../envs/cuda.yaml"
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
        report_to=report_to,
    params:
        target=lambda wildcards: wildcards.teacher,
        # `layers` comes from the target (teacher_l{n}), so teacher.layers reruns only `teacher`.
        teacher=settings("teacher", drop=("layers",)),
        layers=teacher_layers,
        backbone=backbone_loading,
        prompt=settings("prompt"),
        evaluate=settings("evaluate"),
        checkpoints=checkpoints,
    script:
        "../workflow_scripts/run_stage.py"


rule direct_inference:
    input:
        **layout.data_inputs(),
        teacher=layout.model_file(targets.TEACHER, "model"),
        teacher_config=layout.model_file(targets.TEACHER, "config"),
        item_embeddings=layout.item_embeddings(),
        backbone=backbone_dir,
    output:
        **{name: layout.direct_inference(name, targets.TEACHER) for name in ("table", "ranks", "manifest")},
    log:
        layout.log("direct_inference"),
    benchmark:
        layout.benchmark("direct_inference")
    conda:
        "../envs/cuda.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("direct_inference"),
        mem_mb=lambda wildcards, attempt: 32000 * attempt,
        runtime=120,
        gpu=1,
        eval_batch_size=512,
    params:
        layers=direct_layers,
        evaluate=settings("evaluate"),
        backbone=settings("backbone", keys=("precision",)),
    script:
        "../workflow_scripts/run_stage.py"
