# SASRec pretraining and the popularity reference, both scored by the shared evaluation routine.


rule sasrec:
    input:
        **layout.data_inputs(),
    output:
        **layout.model_outputs("sasrec"),
    log:
        layout.log("sasrec"),
    benchmark:
        layout.benchmark("sasrec")
    conda:
        "../envs/cuda.yaml"
    threads: 2
    resources:
        **sasrec_resources("sasrec"),
    params:
        target="sasrec",
        sasrec=settings("sasrec", drop=("authors_protocol",)),
        authors_protocol=False,
        evaluate=settings("evaluate"),
        checkpoints=checkpoints,
    script:
        "../workflow_scripts/run_stage.py"


# The SLMRec authors' SASRec (report.sasrec_authors): their settings, one target per user; its own row.
use rule sasrec as sasrec_authors with:
    output:
        **layout.model_outputs("sasrec_authors"),
    log:
        layout.log("sasrec_authors"),
    benchmark:
        layout.benchmark("sasrec_authors")
    resources:
        **sasrec_resources("sasrec_authors"),
    params:
        target="sasrec_authors",
        sasrec=settings("sasrec"),
        authors_protocol=True,
        evaluate=settings("evaluate"),
        checkpoints=checkpoints,


rule popularity:
    input:
        **layout.data_inputs(),
    output:
        **layout.model_outputs(layout.POPULARITY),
    log:
        layout.log("popularity"),
    benchmark:
        layout.benchmark("popularity")
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("popularity"),
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=30,
        eval_batch_size=512,
    params:
        target="popularity",
        evaluate=settings("evaluate"),
    script:
        "../workflow_scripts/run_stage.py"
