# Glue only: read and validate the configuration, ask the plan (adaloss.plan: which runs, pools, OPT
# exits, training jobs and commands), constrain the wildcards, and the `get_<thing>` input functions.
# Everything that computes is in `adaloss`.

import copy
import os
import re
import sys

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from adaloss.flops import PACK_THROUGHPUT, read_pack_throughput
from adaloss.plan import LM_POOL, PYTHON, Plan, cli_flags, run_dir

# The overrides as written: validation fills every `train` default into them too.
DATASET_TRAIN = copy.deepcopy(config.get("dataset_train", {}))
try:
    validate(config, schema="../schemas/config.schema.yaml")
except WorkflowError as error:  # one line naming the key, instead of the whole schema
    cause = error.__context__
    if not isinstance(cause, jsonschema.ValidationError):
        raise
    where = ".".join(map(str, cause.absolute_path)) or "the top level"
    raise WorkflowError(f"invalid config at {where}: {cause.message}") from None

# the runs, jobs and commands (adaloss.plan); GPU-hours at the packed throughput a GPU measured, if any
PLAN = Plan(config, dataset_train=DATASET_TRAIN,
            throughput=read_pack_throughput(f"{workflow.basedir}/{PACK_THROUGHPUT}"))
ADALOSS = f"{PYTHON} -m adaloss"
TABLES = "results/tables"
NOTEBOOKS = f"{workflow.basedir}/workflow/notebooks"
EANN_RUN = run_dir("eann_runs", "{dataset}", "{model}", "{weighting}", "{seed}")


# E8's runs (results/lm_runs/...) share `model` and `weighting` with the image runs: their names join.
wildcard_constraints:
    dataset="|".join(PLAN.config["datasets"]),
    model="|".join([*PLAN.models, *PLAN.lm_models]),
    weighting=rf"{'|'.join([*PLAN.weightings, *PLAN.lm.get('weightings', [])])}|opt\d+",
    seed=r"\d+",


# Snakemake decides on a dry run only after parsing, so the command line tells us.
if any(a in ("--dry-run", "--dryrun") or re.fullmatch(r"-[a-zA-Z]*n[a-zA-Z]*", a) for a in sys.argv[1:]):
    if PLAN.image_study:
        print(PLAN.summary(), file=sys.stderr)
    if PLAN.lm:
        print(PLAN.lm_summary(), file=sys.stderr)


def wildcard_job(pool, wildcards):
    """The job of a wildcard training rule (`train.pack` 1): one run, or every seed of it when packed."""
    seed = wildcards.get("seed")
    return PLAN.job(pool, wildcards.dataset, wildcards.model, wildcards.weighting, seed and int(seed))


def get_train_command(pool):
    """The command of a wildcard training rule's job, with the threads Snakemake gives it."""
    return lambda wildcards, threads: PLAN.train_command(wildcard_job(pool, wildcards), threads)


def get_lm_command(wildcards, threads):
    """The command of an E8 training job (rule train_lm), with the threads Snakemake gives it."""
    return PLAN.lm_train_command(PLAN.lm_job(wildcards.model, wildcards.weighting, wildcards.seed), threads)


def get_pack_command(job):
    """The command of a pack's rule, with the threads Snakemake gives it."""
    return lambda wildcards, threads: PLAN.train_command(job, threads)


def get_exits():
    return PLAN.run_files("exits.csv")


def get_metrics():
    return PLAN.run_files("metrics.json")


def get_lm_exits():
    return PLAN.run_files("exits.csv", LM_POOL)


def get_lm_metrics():
    return PLAN.run_files("metrics.json", LM_POOL)


def get_benchmarks():
    """The Snakemake benchmark file of every training job, E8's too (adaloss.tables reads their layout)."""
    return sorted(job.benchmark for job in (*PLAN.jobs, *PLAN.lm_jobs))


def get_adaloss_metrics():
    return PLAN.run_files("metrics.json", models=PLAN.compared, weightings=["adaloss"])


def get_adaloss_weights():
    return PLAN.run_files("weights.csv", models=PLAN.compared, weightings=["adaloss"])


def get_eann_exits():
    """The EANN members' exits.csv (the pool also holds E7's runs, which E4 does not read)."""
    e4 = PLAN.e4
    return PLAN.run_files("exits.csv", "eann_runs", models=e4.get("members", []), weightings=e4.get("weightings", []))


def get_costs_args(wildcards):
    return PLAN.costs_args(wildcards.dataset, wildcards.model)


def get_latency():
    return PLAN.latency_files()


def get_budgeted():
    return PLAN.budgeted_files()


def get_eann_metrics():
    return PLAN.run_files("metrics.json", "eann_runs")


def notebook_outputs(name, category):
    """The figure (marked for `snakemake --report`), executed notebook and HTML of experiment `name`."""
    return {
        "figure": report(
            f"results/figures/{name}.png",
            caption=f"../report/{name}.rst",
            category=category,
            labels={"profile": config["profile"], "figure": name},
        ),
        "ipynb": f"results/notebooks/{name}.ipynb",
        "html": f"results/notebooks/{name}.html",
    }


def get_figures():
    return [f"results/figures/{e}.png" for e in PLAN.experiments]


def get_report_tables():
    """The tables the report reads: the runs and the paper's always, the anytime and relative ones when an
    image experiment runs, each experiment's own if selected."""
    tables = [*rules.paper_relative_to_opt.output, *rules.runs_table.output]
    if PLAN.image_study:
        tables += [*rules.anytime_errors.output, *rules.relative_to_opt.output, *rules.latency_table.output]
    tables += [*rules.small_vs_large.output] if PLAN.e3 else []
    tables += [*rules.eann.output] if PLAN.e4 else []
    tables += [*rules.adaloss_weights.output] if "e5" in PLAN.selected else []
    tables += [*rules.weight_trajectories.output] if "e6" in PLAN.selected else []
    tables += [*rules.budgeted_table.output] if PLAN.e7 else []
    tables += [*rules.lm_tables.output] if PLAN.lm else []
    return tables


def get_bench():
    """The speed benchmark of the image trainer, shown in the report when an image experiment runs."""
    return rules.speed_bench.output if PLAN.image_study else []


def get_final_output():
    return ["report/report.html", *(f"results/notebooks/{e}.html" for e in PLAN.experiments)]
