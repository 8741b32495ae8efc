# Training: one job per (dataset, model, weighting, seed), or per (dataset, model, weighting) with
# every seed one after another when `resources.pack_seeds` is set; OPT networks as weighting opt{k},
# a loss scale as a suffix (const_log2, adaloss_matched). Each run directory holds checkpoint.pt (not
# a declared output, so a failed or cancelled job resumes from its last epoch), log.csv, exits.csv,
# weights.csv and metrics.json.
# A checkpoint made with other flags (the config changed, or another profile trained this run
# directory) is discarded and the run starts over (--restart-on-change); same flags resume.


# Every run of E1-E3, E5, E6 and the loss-scale ablation, on the whole training set (as the authors)
rule train:
    output:
        exits=job_files(RUN, "exits.csv"),
        metrics=job_files(RUN, "metrics.json"),
        weights=job_files(RUN, "weights.csv"),
        log_csv=job_files(RUN, "log.csv"),
    log:
        job_path("logs/train/{dataset}/{model}/{weighting}/seed{seed}.log"),
    benchmark:
        job_path("results/benchmarks/runs/{dataset}/{model}/{weighting}/seed{seed}.tsv")
    params:
        out=get_train_out(RUN),
        args=get_train_args,
    threads: config["resources"]["threads"]
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=job_runtime,
        gpu=config["resources"]["gpu"],
        slurm_partition=config["resources"]["slurm_partition"],
    shell:
        "{ADALOSS} train --out {params.out} {params.args} --threads {threads}"
        " --no-progress --restart-on-change > {log} 2>&1"


# E4's members: the same training, holding out eann.val_fraction of the training set for the EANN's choice
use rule train as train_eann_member with:
    output:
        exits=job_files(EANN_RUN, "exits.csv"),
        metrics=job_files(EANN_RUN, "metrics.json"),
        weights=job_files(EANN_RUN, "weights.csv"),
        log_csv=job_files(EANN_RUN, "log.csv"),
    log:
        job_path("logs/train_eann_member/{dataset}/{model}/{weighting}/seed{seed}.log"),
    benchmark:
        job_path("results/benchmarks/eann_runs/{dataset}/{model}/{weighting}/seed{seed}.tsv")
    params:
        out=get_train_out(EANN_RUN),
        args=get_eann_train_args,
