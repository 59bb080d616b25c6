# Recommendations out (beyond the paper): each user's top k from any model row, scored in shards (Snakemake's
# scatter/gather: a Slurm profile runs the shards as parallel jobs) and gathered into one table; and a trained LLM
# model exported as a self-contained directory for serving. Neither is part of the default target.

from slmrec.errors import ConfigError

# The shard count is one for the whole workflow (`--set-scatter recommend=N` overrides it); it never changes the output.
for _dataset in DATASETS:
    if "shards" in config["datasets"][_dataset].get("recommend", {}):
        raise ConfigError(
            f"config key datasets.{_dataset}.recommend.shards: the shard count is one for the whole workflow "
            "(Snakemake's scattergather); set the top-level recommend.shards, or pass --set-scatter recommend=N"
        )


scattergather:
    recommend=config["recommend"]["shards"],


rule recommend_shard:
    input:
        unpack(recommended_model),
        splits=layout.data_file("splits"),
        user_ids=layout.data_file("user_ids"),
        item_ids=layout.data_file("item_ids"),
    output:
        parquet=layout.recommendation_shard("{model}", "{scatteritem}"),
        manifest=layout.recommendation_shard("{model}", "{scatteritem}", name="manifest"),
    log:
        layout.log("recommendations/{model}.{scatteritem}"),
    benchmark:
        layout.benchmark("recommendations/{model}.{scatteritem}")
    wildcard_constraints:
        model=layout.MODEL_PATTERN,
    conda:
        "../envs/cuda.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("recommend_shard"),
        mem_mb=lambda wildcards, attempt: 32000 * attempt,
        runtime=120,
        gpu=1,
        eval_batch_size=512,
    params:
        target=lambda wildcards: wildcards.model,
        shard=lambda wildcards: wildcards.scatteritem,
        recommend=settings("recommend", drop=("shards",)),
        backbone=recommend_precision,
    script:
        "../workflow_scripts/run_stage.py"


rule recommend:
    input:
        shards=gather.recommend(layout.recommendation_shard("{model}", "{scatteritem}"), allow_missing=True),
    output:
        parquet=layout.recommendations("{model}"),
        manifest=layout.recommendations("{model}", name="manifest"),
    log:
        layout.log("recommendations/{model}"),
    benchmark:
        layout.benchmark("recommendations/{model}")
    wildcard_constraints:
        model=layout.MODEL_PATTERN,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("recommend"),
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=30,
    script:
        "../workflow_scripts/run_stage.py"


rule export:
    input:
        unpack(recommended_model),
        item_ids=layout.data_file("item_ids"),
    output:
        directory=directory(layout.export("{model}", "{variant}")),
    log:
        layout.log("export/{model}.{variant}"),
    benchmark:
        layout.benchmark("export/{model}.{variant}")
    wildcard_constraints:
        model=layout.LLM_PATTERN,
        variant="|".join(layout.EXPORT_VARIANTS),
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        try_number=retry_unless_bad_input("export"),
        mem_mb=lambda wildcards, attempt: 32000 * attempt,
        runtime=60,
    params:
        target=lambda wildcards: wildcards.model,
        variant=lambda wildcards: wildcards.variant,
    script:
        "../workflow_scripts/run_stage.py"
