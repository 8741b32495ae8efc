# Training: one job per (dataset, model, weighting, seed), OPT networks as weighting opt{k}.
# The run directory holds checkpoint.pt (not a declared output, so a failed or cancelled job
# resumes from its last epoch), log.csv, exits.csv, weights.csv and metrics.json.
# A checkpoint made with other flags (the config changed, or another profile trained this run
# directory) is discarded and the run starts over (--restart-on-change); same flags resume.


rule train:
    output:
        exits=f"{RUN}/exits.csv",
        metrics=f"{RUN}/metrics.json",
        weights=f"{RUN}/weights.csv",
        log_csv=f"{RUN}/log.csv",
    log:
        "logs/train/{dataset}/{model}/{weighting}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{model}/{weighting}/seed{seed}.tsv"
    params:
        out=RUN,
        args=get_train_args,
    threads: config["resources"]["threads"]
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpu"],
        slurm_partition=config["resources"]["slurm_partition"],
    shell:
        "{ADALOSS} train --out {params.out} {params.args} --threads {threads}"
        " --no-progress --restart-on-change > {log} 2>&1"
