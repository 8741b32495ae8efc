# Training. adaloss.plan decides which runs train in which job, and each job's command line:
# * `train.pack` 1 (the default): the wildcard rules `train` and `train_eann_member`, one job per
#   (dataset, model, weighting, seed), or per (dataset, model, weighting) with every seed one after
#   another when `resources.pack_seeds` is set;
# * `train.pack` N > 1: one rule per pack (train_pack_{pool}_{dataset}_{model}_{i}), whose job trains
#   up to N runs of one pool, dataset and model in lockstep in one process (adaloss.pack), the runs of
#   each (dataset, model) split into balanced packs in sorted order.
# OPT networks are weighting opt{k}, a loss scale a suffix (const_log2, adaloss_matched). Each run
# directory holds checkpoint.pt (not a declared output, so a failed or cancelled job resumes from its
# last epoch), log.csv, exits.csv, weights.csv and metrics.json, whichever job trained it.
# A checkpoint made with other flags (the config changed, or another profile trained this run
# directory) is discarded and the run starts over (--restart-on-change); same flags resume.

# The wildcard rules' patterns: the paths of a job whose every value is its wildcard
TRAIN_JOB = PLAN.job("runs", "{dataset}", "{model}", "{weighting}", "{seed}")
EANN_JOB = PLAN.job("eann_runs", "{dataset}", "{model}", "{weighting}", "{seed}")
# What every training job asks of the machine (its runtime: `resources.runtime` per run it trains)
RESOURCES = {k: config["resources"][k] for k in ("mem_mb", "gpu", "slurm_partition")}


if PLAN.pack == 1:

    # Every run of E1-E3, E5, E6 and the loss-scale ablation, on the whole training set (as the authors)
    rule train:
        output:
            exits=TRAIN_JOB.files("exits.csv"),
            metrics=TRAIN_JOB.files("metrics.json"),
            weights=TRAIN_JOB.files("weights.csv"),
            log_csv=TRAIN_JOB.files("log.csv"),
        log:
            TRAIN_JOB.log,
        benchmark:
            TRAIN_JOB.benchmark
        params:
            command=get_train_command("runs"),
        threads: config["resources"]["threads"]
        resources:
            runtime=PLAN.runtime(TRAIN_JOB),
            **RESOURCES,
        shell:
            "{params.command} > {log} 2>&1"

    # E4's members and E7's runs: the same training, holding out a validation split of the training set
    use rule train as train_eann_member with:
        output:
            exits=EANN_JOB.files("exits.csv"),
            metrics=EANN_JOB.files("metrics.json"),
            weights=EANN_JOB.files("weights.csv"),
            log_csv=EANN_JOB.files("log.csv"),
        log:
            EANN_JOB.log,
        benchmark:
            EANN_JOB.benchmark
        params:
            command=get_train_command("eann_runs"),

else:
    # One rule per pack, of either pool
    for pack in PLAN.jobs:

        rule:
            name:
                pack.rule
            output:
                exits=pack.files("exits.csv"),
                metrics=pack.files("metrics.json"),
                weights=pack.files("weights.csv"),
                log_csv=pack.files("log.csv"),
            log:
                pack.log,
            benchmark:
                pack.benchmark
            params:
                command=get_pack_command(pack),
            threads: config["resources"]["threads"]
            resources:
                runtime=PLAN.runtime(pack),
                **RESOURCES,
            shell:
                "{params.command} > {log} 2>&1"


# E8 (beyond the paper): the early-exit transformer language model, one job per (model, weighting,
# seed) of `lm`, OPT networks as weighting opt{k}, into results/lm_runs/{corpus}/{model}/{weighting}/
# seed{seed}/ (python -m adaloss train-lm; checkpoints and resume as the image runs)
if PLAN.lm:
    LM_JOB = PLAN.lm_job("{model}", "{weighting}", "{seed}")  # the wildcard rule's patterns

    rule train_lm:
        output:
            exits=LM_JOB.files("exits.csv"),
            metrics=LM_JOB.files("metrics.json"),
            weights=LM_JOB.files("weights.csv"),
            log_csv=LM_JOB.files("log.csv"),
        log:
            LM_JOB.log,
        benchmark:
            LM_JOB.benchmark
        params:
            command=get_lm_command,
        threads: config["resources"]["threads"]
        resources:
            runtime=PLAN.runtime(LM_JOB),
            **RESOURCES,
        shell:
            "{params.command} > {log} 2>&1"
