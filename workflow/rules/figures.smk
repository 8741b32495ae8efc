# Figures: one notebook per experiment (workflow/notebooks/{exp}.ipynb) with a `parameters` cell,
# run by papermill on results/tables/ only (it never trains), then rendered to HTML by nbconvert.
# Each notebook saves its figure atomically to results/figures/{exp}.png. The executed notebook and
# its HTML are written to temporary names and renamed into place, so neither is ever half-written.

NOTEBOOK_SHELL = (
    "{PYTHON} -m papermill {input.notebook} {output.ipynb}.tmp.ipynb -k python3 --log-output"
    " -p tables_dir results/tables -p fig_dir results/figures -p profile {params.profile}"
    " > {log} 2>&1"
    " && mv {output.ipynb}.tmp.ipynb {output.ipynb}"
    " && {PYTHON} -m jupyter nbconvert --to html --stdout {output.ipynb} > {output.html}.tmp 2>> {log}"
    " && mv {output.html}.tmp {output.html}"
)


# E1: anytime test error against cumulative FLOPs per exit, every scheme and OPT
rule e1_anytime:
    input:
        notebook=f"{NOTEBOOKS}/e1_anytime.ipynb",
        tables=rules.anytime_errors.output,
    output:
        **notebook_outputs("e1_anytime", "E1 Anytime error"),
    log:
        "logs/notebooks/e1_anytime.log",
    params:
        profile=config["profile"],
    shell:
        NOTEBOOK_SHELL


# E2: relative % increase in error over OPT at 1/4, 1/2, 3/4, 1 of the cost, per family, beside the paper's row
rule e2_relative_to_opt:
    input:
        notebook=f"{NOTEBOOKS}/e2_relative_to_opt.ipynb",
        tables=[*rules.relative_to_opt.output, *rules.paper_relative_to_opt.output, *rules.runs_table.output],
    output:
        **notebook_outputs("e2_relative_to_opt", "E2 Relative to OPT"),
    log:
        "logs/notebooks/e2_relative_to_opt.log",
    params:
        profile=config["profile"],
    shell:
        NOTEBOOK_SHELL


# E3: a small ANN with AdaLoss against a larger ANN with CONST
rule e3_small_vs_large:
    input:
        notebook=f"{NOTEBOOKS}/e3_small_vs_large.ipynb",
        tables=rules.small_vs_large.output,
    output:
        **notebook_outputs("e3_small_vs_large", "E3 Small vs large"),
    log:
        "logs/notebooks/e3_small_vs_large.log",
    params:
        profile=config["profile"],
    shell:
        NOTEBOOK_SHELL


# E4: EANN anytime curves (AdaLoss and CONST members) against OPT and the single ANNs, and the extra-cost factors
rule e4_eann:
    input:
        notebook=f"{NOTEBOOKS}/e4_eann.ipynb",
        tables=rules.eann.output,
    output:
        **notebook_outputs("e4_eann", "E4 EANN"),
    log:
        "logs/notebooks/e4_eann.log",
    params:
        profile=config["profile"],
    shell:
        NOTEBOOK_SHELL


# E5: AdaLoss's final weights per exit, datasets ordered by difficulty (OPT's final error)
rule e5_weights_vs_difficulty:
    input:
        notebook=f"{NOTEBOOKS}/e5_weights_vs_difficulty.ipynb",
        tables=[*rules.adaloss_weights.output, *rules.anytime_errors.output],
    output:
        **notebook_outputs("e5_weights_vs_difficulty", "E5 Weights vs difficulty"),
    log:
        "logs/notebooks/e5_weights_vs_difficulty.log",
    params:
        profile=config["profile"],
    shell:
        NOTEBOOK_SHELL


# E6: AdaLoss's weights over training
rule e6_weight_trajectories:
    input:
        notebook=f"{NOTEBOOKS}/e6_weight_trajectories.ipynb",
        tables=rules.weight_trajectories.output,
    output:
        **notebook_outputs("e6_weight_trajectories", "E6 Weight trajectories"),
    log:
        "logs/notebooks/e6_weight_trajectories.log",
    params:
        profile=config["profile"],
    shell:
        NOTEBOOK_SHELL


# E7: test error against the average FLOPs per image reached by early exit, every scheme, OPT as stars
rule e7_budgeted:
    input:
        notebook=f"{NOTEBOOKS}/e7_budgeted.ipynb",
        tables=[*rules.budgeted_table.output, *rules.anytime_errors.output],
    output:
        **notebook_outputs("e7_budgeted", "E7 Budgeted batch classification"),
    log:
        "logs/notebooks/e7_budgeted.log",
    params:
        profile=config["profile"],
    shell:
        NOTEBOOK_SHELL


# E8 (beyond the paper): test bits per byte of every exit of the early-exit transformer against its
# FLOPs per token, every scheme and OPT, and the relative increase over OPT
rule e8_lm:
    input:
        notebook=f"{NOTEBOOKS}/e8_lm.ipynb",
        tables=rules.lm_tables.output,
    output:
        **notebook_outputs("e8_lm", "E8 Transformer language model"),
    log:
        "logs/notebooks/e8_lm.log",
    params:
        profile=config["profile"],
    shell:
        NOTEBOOK_SHELL
