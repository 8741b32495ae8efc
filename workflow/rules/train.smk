# Training: one job per (dataset, model, weighting, seed), OPT networks as weighting opt{k}.
# The run directory holds checkpoint.pt (not a declared output, so a failed or cancelled job
# resumes from its last epoch), log.csv, exits.csv, weights.csv and metrics.json.
# A checkpoint made with other flags (the config changed, or another profile trained this run
# directory) would be refused by `train`; the job then starts over: the flags of the last attempt
# are kept in .train_args beside it, and a checkpoint is removed unless they are unchanged.


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
    shell:
        "echo {params.args:q} > {params.out}/.train_args.new"
        " && {{ cmp -s {params.out}/.train_args.new {params.out}/.train_args"
        " || rm -f {params.out}/checkpoint.pt; }}"
        " && mv {params.out}/.train_args.new {params.out}/.train_args"
        " && python -m adaloss train --out {params.out} {params.args} --threads {threads} --no-progress"
        " > {log} 2>&1"
