# SLMRec distillation: the frozen teacher's states (computed once per trained teacher), the students
# (offline and online) and the Table 4 ablation variants, from one rule; the ablation table reuses the
# offline student for the variant that keeps every term.


rule teacher_states:
    input:
        **layout.data_inputs(),
        teacher=layout.model_file("{teacher}", "model"),
        teacher_config=layout.model_file("{teacher}", "config"),
        item_embeddings=layout.item_embeddings(),
        backbone=backbone_dir,
    output:
        states=layout.states("{teacher}"),
        manifest=layout.states("{teacher}", "manifest"),
    log:
        layout.log("{teacher}.states"),
    benchmark:
        layout.benchmark("{teacher}.states")
    wildcard_constraints:
        teacher=targets.TEACHER_PATTERN,
    conda:
        "../envs/cuda.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("teacher_states"),
        mem_mb=lambda wildcards, attempt: 32000 * attempt,
        runtime=120,
        gpu=1,
        eval_batch_size=512,
    params:
        samples=states_samples,
        distill=states_distill,
        backbone=settings("backbone", keys=("precision",)),
    script:
        "../workflow_scripts/run_stage.py"


rule student:
    input:
        unpack(student_teacher_inputs),
        **layout.data_inputs(),
        item_embeddings=layout.item_embeddings(),
        backbone=backbone_dir,
    output:
        **layout.model_outputs("{student}"),
    log:
        layout.log("{student}"),
    benchmark:
        layout.benchmark("{student}")
    wildcard_constraints:
        student=targets.LLM_STUDENT_PATTERN,
    conda:
        "../envs/cuda.yaml"
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
        report_to=report_to,
    params:
        target=lambda wildcards: wildcards.student,
        student=settings("student"),
        distill=student_distill,
        teacher=online_teacher,
        backbone=backbone_loading,
        prompt=settings("prompt"),
        evaluate=settings("evaluate"),
        checkpoints=checkpoints,
    script:
        "../workflow_scripts/run_stage.py"


# SASRec as a student of an LLM teacher (beyond the paper): trained as the sasrec rule trains it, plus the score
# terms from the teacher's cached states and output projection; the LLM is never loaded.
rule sasrec_student:
    input:
        unpack(student_teacher_inputs),
        **layout.data_inputs(),
        item_embeddings=layout.item_embeddings(),
    output:
        **layout.model_outputs("{student}", files=layout.SASREC_FILES),
    log:
        layout.log("{student}"),
    benchmark:
        layout.benchmark("{student}")
    wildcard_constraints:
        student=targets.SASREC_STUDENT_PATTERN,
    conda:
        "../envs/cuda.yaml"
    threads: 2
    resources:
        **sasrec_resources("sasrec_student"),
    params:
        target=lambda wildcards: wildcards.student,
        sasrec=settings("sasrec", drop=("authors_protocol",)),
        samples=scored_samples,
        distill=student_distill,
        evaluate=settings("evaluate"),
        checkpoints=checkpoints,
    script:
        "../workflow_scripts/run_stage.py"


rule ablation:
    input:
        unpack(ablation_rows),
    output:
        table=report(
            layout.ablation(),
            category="Results",
            labels={"dataset": "{dataset}", "table": "ablation (Table 4)"},
        ),
        manifest=layout.ablation("manifest"),
    log:
        layout.log("ablation"),
    benchmark:
        layout.benchmark("ablation")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("ablation"),
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=5,
    script:
        "../workflow_scripts/run_stage.py"
