# Tables: per-run outputs gathered into tidy CSVs under results/tables/ (adaloss.tables, adaloss.eann).
# One gather rule per table; every rule only calls `python -m adaloss tables|eann`.

# E1: test error of every exit of every run, with its cumulative FLOPs
rule anytime_errors:
    input:
        exits=get_exits(),
    output:
        f"{TABLES}/anytime_errors.csv",
    log:
        "logs/tables/anytime_errors.log",
    shell:
        "{ADALOSS} tables anytime --exits {input.exits} --out {output} > {log} 2>&1"


# E2: relative % increase in error over OPT at 1/4, 1/2, 3/4, 1 of the cost
rule relative_to_opt:
    input:
        rules.anytime_errors.output,
    output:
        means=f"{TABLES}/relative_to_opt.csv",
        seeds=f"{TABLES}/relative_to_opt_seeds.csv",
    log:
        "logs/tables/relative_to_opt.log",
    shell:
        "{ADALOSS} tables relative --anytime {input} --out {output.means}"
        " --seeds-out {output.seeds} > {log} 2>&1"


# E2: the paper's own numbers, arXiv v3 Table 3a (12 ResANNs, CIFAR10 + CIFAR100 + SVHN) and 3b (ILSVRC)
rule paper_relative_to_opt:
    output:
        table_3a=f"{TABLES}/paper_relative_to_opt.csv",
        table_3b=f"{TABLES}/paper_ilsvrc.csv",
    log:
        "logs/tables/paper_relative_to_opt.log",
    shell:
        "{ADALOSS} tables paper --out {output.table_3a} --ilsvrc-out {output.table_3b} > {log} 2>&1"


# E3: each small ANN with AdaLoss, the same with CONST (the control) and its ~2x larger ANN with CONST
rule small_vs_large:
    input:
        rules.anytime_errors.output,
    output:
        f"{TABLES}/small_vs_large.csv",
    log:
        "logs/tables/small_vs_large.log",
    params:
        pairs=" ".join(f"{small}:{large}" for small, large in PLAN.e3_pairs),
        small=PLAN.e3.get("small_weighting"),
        large=PLAN.e3.get("large_weighting"),
    shell:
        "{ADALOSS} tables small-vs-large --anytime {input} --pairs {params.pairs}"
        " --small-weighting {params.small} --large-weighting {params.large} --out {output} > {log} 2>&1"


# E4: the EANN curves, one per member weighting (selection on the members' hold-out error), and
# their extra-cost factors over OPT within eann.tolerance
rule eann:
    input:
        exits=get_eann_exits(),
        anytime=rules.anytime_errors.output,
    output:
        curve=f"{TABLES}/eann.csv",
        cost=f"{TABLES}/eann_cost.csv",
    log:
        "logs/tables/eann.log",
    params:
        members=" ".join(PLAN.e4.get("members", [])),
        opt_model=PLAN.e4.get("opt_model"),
        tolerance=PLAN.e4.get("tolerance"),
    shell:
        "{ADALOSS} eann --exits {input.exits} --members {params.members}"
        " --anytime {input.anytime} --opt-model {params.opt_model} --tolerance {params.tolerance}"
        " --out {output.curve} --cost-out {output.cost} > {log} 2>&1"


# E5: AdaLoss's final weights per exit
rule adaloss_weights:
    input:
        get_adaloss_metrics(),
    output:
        f"{TABLES}/adaloss_weights.csv",
    log:
        "logs/tables/adaloss_weights.log",
    shell:
        "{ADALOSS} tables weights --metrics {input} --out {output} > {log} 2>&1"


# E6: AdaLoss's weights over training
rule weight_trajectories:
    input:
        metrics=get_adaloss_metrics(),
        weights=get_adaloss_weights(),
    output:
        f"{TABLES}/weight_trajectories.csv",
    log:
        "logs/tables/weight_trajectories.log",
    shell:
        "{ADALOSS} tables trajectories --metrics {input.metrics} --out {output} > {log} 2>&1"


# Scale and compute time of every run (for the report)
rule runs_table:
    input:
        metrics=[*get_metrics(), *get_eann_metrics(), *get_lm_metrics()],
        benchmarks=get_benchmarks(),
    output:
        f"{TABLES}/runs.csv",
    log:
        "logs/tables/runs.log",
    shell:
        "{ADALOSS} tables runs --metrics {input.metrics} --benchmarks {input.benchmarks}"
        " --out {output} > {log} 2>&1"


# E7: early exit at target average costs, per run and budget
rule budgeted_table:
    input:
        get_budgeted(),
    output:
        f"{TABLES}/budgeted.csv",
    log:
        "logs/tables/budgeted.log",
    shell:
        "{ADALOSS} tables budgeted --files {input} --out {output} > {log} 2>&1"


# E8: test (and validation) bits per byte of every exit of every language-model run, with its FLOPs and
# milliseconds per token, and the relative increase in bits per byte over OPT per seed
rule lm_tables:
    input:
        exits=get_lm_exits(),
    output:
        anytime=f"{TABLES}/lm_anytime.csv",
        relative=f"{TABLES}/lm_relative_to_opt.csv",
    log:
        "logs/tables/lm_tables.log",
    shell:
        "{ADALOSS} tables lm --exits {input.exits} --out {output.anytime}"
        " --relative-out {output.relative} > {log} 2>&1"


# Per-exit latency of every compared model, beside its FLOPs
rule latency_table:
    input:
        get_latency(),
    output:
        f"{TABLES}/latency.csv",
    log:
        "logs/tables/latency.log",
    shell:
        "{ADALOSS} tables latency --files {input} --out {output} > {log} 2>&1"
