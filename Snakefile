# The AdaLoss study (Hu, Dey, Hebert, Bagnell, AAAI 2019) as one DAG: train every run of every
# experiment, gather tidy tables, draw one figure per experiment with a papermill notebook, and build
# one self-contained HTML report.
#
#   snakemake --cores all                                  # demo: digits + mnist5k on a laptop CPU
#   snakemake --cores all --configfile config/smoke.yaml   # the same DAG on tiny models (CI)
#   snakemake --profile profiles/local --configfile config/paper.yaml   # the paper's grid (GPU)
#   snakemake --cores all --configfile config/lm.yaml      # E8 alone: AdaLoss on a transformer LM (CPU)
#
# Layout (every path says which rule made it; logs mirror results):
#   results/runs/{dataset}/{model}/{weighting}/seed{seed}/  one training (weighting opt{k}: OPT at exit k)
#   results/tables/*.csv        tidy tables: anytime_errors, relative_to_opt, adaloss_weights, ...
#   results/eann_runs/...       runs holding out part of the training set (EANN members, E7's runs)
#   results/latency/{dataset}/{model}.csv   measured ms per image of every exit
#   results/lm_runs/{corpus}/{model}/{weighting}/seed{seed}/  E8: one language-model training (beyond the paper)
#   results/figures/{exp}.png   one figure per experiment E1-E8, drawn by workflow/notebooks/{exp}.ipynb
#   results/notebooks/{exp}.*   the executed notebooks and their HTML
#   report/report.html          the report: claims, figures, tables, scale and compute
#   logs/{rule}/...             one log per job


from snakemake.utils import min_version

min_version("9.0")


# The default profile, unless --configfile names another (Snakemake would otherwise merge the two).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"



report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    anytime_errors,
    relative_to_opt,
    paper_relative_to_opt,
    small_vs_large,
    eann,
    adaloss_weights,
    weight_trajectories,
    runs_table,
    budgeted_table,
    latency_table,
    lm_tables,
    e1_anytime,
    e2_relative_to_opt,
    e3_small_vs_large,
    e4_eann,
    e5_weights_vs_difficulty,
    e6_weight_trajectories,
    e7_budgeted,
    e8_lm,
    study_report,


rule all:
    default_target: True
    input:
        get_final_output(),
