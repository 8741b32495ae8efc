# Evaluation of trained networks beyond anytime prediction; every rule reads checkpoints or builds
# models, and none trains.


# E7: budgeted batch classification of each E7 run: early-exit thresholds fit on the run's held-out
# share of the training set, for each target average cost, then applied to the test set
rule budgeted:
    input:
        exits=f"{EANN_RUN}/exits.csv",
        metrics=f"{EANN_RUN}/metrics.json",
    output:
        f"{EANN_RUN}/budgeted.csv",
    log:
        "logs/budgeted/{dataset}/{model}/{weighting}/seed{seed}.log",
    params:
        run=EANN_RUN,
        budgets=" ".join(map(str, PLAN.e7.get("budgets", []))),
        device=lambda wildcards: PLAN.train_options(wildcards.dataset)["device"],
    threads: config["resources"]["threads"]
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpu"],
        slurm_partition=config["resources"]["slurm_partition"],
    shell:
        "{ADALOSS} budgeted {params.run} --budgets {params.budgets} --device {params.device}"
        " --threads {threads} --out {output} > {log} 2>&1"


# Measured cost beside FLOPs: milliseconds per image of every exit at batch 1 and 64, per compared
# model, on the device its runs train on
rule latency:
    output:
        "results/latency/{dataset}/{model}.csv",
    log:
        "logs/latency/{dataset}/{model}.log",
    params:
        args=get_costs_args,
        device=lambda wildcards: PLAN.train_options(wildcards.dataset)["device"],
    threads: config["resources"]["threads"]
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
        gpu=config["resources"]["gpu"],
        slurm_partition=config["resources"]["slurm_partition"],
    shell:
        "{ADALOSS} costs {params.args} --latency --device {params.device} --threads {threads}"
        " > {output}.tmp 2> {log} && mv {output}.tmp {output}"
