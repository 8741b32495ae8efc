# Glue only: read and validate the configuration, constrain the wildcards, list the study's runs and
# final outputs, and the `get_<thing>` input functions. Everything that computes is in `adaloss`.

import copy
import re
import shlex
import sys
from functools import lru_cache

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

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

# Commands run with the interpreter that runs Snakemake (a venv or conda env need not be on PATH;
# under Slurm, jobs start Snakemake with that same interpreter).
PYTHON = shlex.quote(sys.executable)
ADALOSS = f"{PYTHON} -m adaloss"

MODELS = config["models"]
SELECTED = config["experiments"]  # e1..e6: a profile may run only some (the laptop and GPU-quick ones)
E3 = config.get("small_vs_large", {}) if "e3" in SELECTED else {}
# E3's (small, large) pairs: `small` and `large` are one model each or equal-length lists, zipped
E3_SMALL, E3_LARGE = ([E3[k]] if isinstance(E3.get(k, []), str) else E3.get(k, []) for k in ("small", "large"))
E3_PAIRS = list(zip(E3_SMALL, E3_LARGE))
E4 = config.get("eann", {}) if "e4" in SELECTED else {}
E7 = config.get("budgeted", {}) if "e7" in SELECTED else {}
SCALE = config["loss_scale"]
# Runs train on the whole training set, as the authors (do_validation=False). Only the EANN members
# and E7's runs hold out a validation split, on which the EANN chooses and E7 fits its exit
# thresholds; they are trained apart, in eann_runs/ (one pool, so a run both need is trained once).
RUN = "results/runs/{dataset}/{model}/{weighting}/seed{seed}"
EANN_RUN = "results/eann_runs/{dataset}/{model}/{weighting}/seed{seed}"
# resources.pack_seeds: one training job trains every seed of a (dataset, model, weighting), one
# after another, so `import torch` and the job's start-up are paid once per job, not once per run
PACK_SEEDS = config["resources"]["pack_seeds"]
SEEDS = config["seeds"]


def job_files(run_pattern, filename):
    """The files `filename` one training job writes: its run's, or every seed's when seeds are packed."""
    path = f"{run_pattern}/{filename}"
    return expand(path, seed=SEEDS, allow_missing=True) if PACK_SEEDS else path


def job_path(pattern):
    """A per-job path (log, benchmark) of `.../seed{seed}.EXT`: `.../{weighting}.EXT` when seeds are packed."""
    return pattern.replace("/seed{seed}", "") if PACK_SEEDS else pattern


TABLES = "results/tables"
NOTEBOOKS = f"{workflow.basedir}/workflow/notebooks"
EXPERIMENTS = [
    name
    for name in (
        "e1_anytime",
        "e2_relative_to_opt",
        "e3_small_vs_large",
        "e4_eann",
        "e5_weights_vs_difficulty",
        "e6_weight_trajectories",
        "e7_budgeted",
    )
    if name.split("_")[0] in SELECTED
]


def _check(ok, message):
    if not ok:
        raise ValueError(f"config: {message}")


for _name, _key, _given in (("e3", "small_vs_large", E3), ("e4", "eann", E4), ("e7", "budgeted", E7)):
    _check(_name not in SELECTED or _given, f"experiment {_name} is selected but `{_key}` is not given")
_stray = sorted(set(config["dataset_compare"]) - set(config["datasets"]))
if _stray:
    print(f"config: ignoring dataset_compare entries {_stray}, which are not in `datasets`", file=sys.stderr)
DATASET_COMPARE = {d: config["dataset_compare"].get(d, config["compare"]) for d in config["datasets"]}
# Every model some dataset compares: E4's reference and the ablation must be among them.
COMPARED = sorted({m for models in DATASET_COMPARE.values() for m in models})
_undefined = sorted(
    {*COMPARED, *(m for pair in E3_PAIRS for m in pair), *E4.get("members", []), E4.get("opt_model"),
     *SCALE["models"], *E7.get("models", [])} - set(MODELS) - {None}
)
_check(not _undefined, f"models {_undefined} are used but not defined under `models` ({sorted(MODELS)})")
_check(not E4 or E4["opt_model"] in COMPARED,
       f"eann.opt_model {E4.get('opt_model')!r} must be a compared model (`compare` or `dataset_compare`)")
_check(set(SCALE["models"]) <= set(COMPARED),
       f"loss_scale.models {SCALE['models']} must be compared models (the ablation is read against their OPT)")
_check(set(E7.get("models", [])) <= set(COMPARED),
       f"budgeted.models {E7.get('models')} must be compared models (their OPT networks are E7's reference)")
_check(not (E4 and E7) or E4["val_fraction"] == E7["val_fraction"],
       f"eann.val_fraction {E4.get('val_fraction')} and budgeted.val_fraction {E7.get('val_fraction')} differ: "
       "their runs share one held-out pool (eann_runs/), so they must hold out the same share")
HELD_OUT_FRACTION = E4.get("val_fraction") or E7.get("val_fraction")
_check(len(E3_SMALL) == len(E3_LARGE),
       f"small_vs_large.small and .large must list as many models: {E3_SMALL} vs {E3_LARGE}")
_check(all(small in COMPARED for small, _ in E3_PAIRS),
       f"small_vs_large.small {E3.get('small')!r} must be compared models (their AdaLoss and CONST runs are E1's)")
_check("adaloss" in config["weightings"], "`weightings` must include adaloss (E1, E2, E5, E6)")
_stray = sorted(set(DATASET_TRAIN) - set(config["datasets"]))
if _stray:  # a profile that replaces `datasets` may keep another's overrides: they change nothing
    print(f"config: ignoring dataset_train entries {_stray}, which are not in `datasets`", file=sys.stderr)
    DATASET_TRAIN = {d: v for d, v in DATASET_TRAIN.items() if d not in _stray}


WEIGHTINGS = sorted({*config["weightings"], *(E3.get(k) for k in ("small_weighting", "large_weighting")),
                     *E4.get("weightings", []), *SCALE["weightings"], *E7.get("weightings", [])} - {None})


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    model="|".join(MODELS),
    weighting=rf"{'|'.join(WEIGHTINGS)}|opt\d+",
    seed=r"\d+",


def train_options(dataset, eann=False):
    """The TrainConfig fields of every run on `dataset`: `train`, then its `dataset_train` overrides;
    a run of the held-out pool (EANN members, E7's runs) also holds out HELD_OUT_FRACTION of the
    training set."""
    options = {**config["train"], **DATASET_TRAIN.get(dataset, {})}
    return {**options, "val_fraction": HELD_OUT_FRACTION} if eann else options


@lru_cache(maxsize=None)
def model_costs(dataset, model):
    """Cumulative FLOPs and parameters per exit of `model` on `dataset`, counted once and cached
    in {data_root}/.adaloss_cache/costs/ (every Slurm job rebuilds the DAG, and every training job
    of the model reads them from there)."""
    import torch
    from adaloss.data import dataset_info
    from adaloss.flops import COSTS_CACHE, cached_exit_costs

    torch.set_num_threads(1)  # tiny single-image passes: threads only add contention
    root = train_options(dataset)["data_root"]
    channels, size, classes = dataset_info(dataset, root)
    options = {k: v for k, v in MODELS[model].items() if k != "arch"}
    return cached_exit_costs(MODELS[model]["arch"], channels, classes, size, options, f"{root}/{COSTS_CACHE}")


@lru_cache(maxsize=None)
def opt_exit_list(dataset, model):
    """The exits of `model` on `dataset` whose anytime cost is nearest 1/4, 1/2, 3/4 and 1 of its total
    (deduplicated), the budget points of docs/fidelity.md (D2): one OPT network is trained for each."""
    from adaloss.flops import opt_exits

    return sorted(set(opt_exits([c.flops for c in model_costs(dataset, model)])))


@lru_cache(maxsize=None)
def study_runs():
    """Every (dataset, model, weighting, seed) trained on the whole training set, each exactly once.
    E3 and the loss-scale ablation run on a dataset only where their models are compared there."""
    runs = set()
    for d in config["datasets"]:
        compared = DATASET_COMPARE[d]
        for s in config["seeds"]:
            for m in compared:
                runs |= {(d, m, w, s) for w in config["weightings"]}
                runs |= {(d, m, f"opt{k}", s) for k in opt_exit_list(d, m)}
            runs |= {(d, m, w, s) for m in SCALE["models"] if m in compared for w in SCALE["weightings"]}
            for small, large in E3_PAIRS:  # the control: the small ANN with the large one's scheme
                if small in compared:
                    runs |= {(d, small, E3["small_weighting"], s), (d, small, E3["large_weighting"], s),
                             (d, large, E3["large_weighting"], s)}
    return tuple(sorted(runs))


@lru_cache(maxsize=None)
def budgeted_runs():
    """Every (dataset, model, weighting, seed) E7 evaluates by early exit, on the datasets where its
    models are compared; trained with a hold-out split, on which the thresholds are fit."""
    return tuple(sorted({(d, m, w, s) for d in config["datasets"] for m in E7.get("models", [])
                         if m in DATASET_COMPARE[d] for w in E7.get("weightings", []) for s in config["seeds"]}))


@lru_cache(maxsize=None)
def eann_runs():
    """Every (dataset, model, weighting, seed) of the held-out pool: the EANN members, on the datasets
    where E4's reference model is compared, and E7's runs."""
    members = {(d, m, w, s) for d in config["datasets"] if E4.get("opt_model") in DATASET_COMPARE[d]
               for s in config["seeds"] for m in E4.get("members", []) for w in E4.get("weightings", [])}
    return tuple(sorted(members | set(budgeted_runs())))


def estimated_gpu_hours():
    """GPU-hours of every training of the study at the throughput we measured (adaloss.flops)."""
    from adaloss.data import train_size
    from adaloss.flops import training_gpu_hours

    hours = 0.0
    for eann, runs in ((False, study_runs()), (True, eann_runs())):
        for d, m, w, s in runs:
            opts = train_options(d, eann)
            costs = model_costs(d, m)
            flops = costs[int(w[3:])].flops if w.startswith("opt") else costs[-1].flops
            images = train_size(d, opts["data_root"])
            images = int(min(images, opts["train_subset"] or images) * (1 - opts["val_fraction"]))
            hours += training_gpu_hours(flops, images, opts["epochs"])
    return hours


def model_plan():
    """One line per (dataset, model) trained: its exits and the exits its OPT networks sit at, with
    their measured share of the cost."""
    from adaloss.flops import cost_fractions

    lines = []
    trained = {(d, m) for d, m, _, _ in (*study_runs(), *eann_runs())}
    for d, m in sorted(trained):
        costs = [c.flops for c in model_costs(d, m)]
        line = f"  {d}/{m}: {len(costs)} exits, {costs[-1] / 1e6:.1f} MFLOPs"
        opts = opt_exit_list(d, m) if m in DATASET_COMPARE[d] else []
        if opts:
            shares = ", ".join(f"{k} ({100 * f:.0f} %)" for k, f in zip(opts, cost_fractions(costs, opts)))
            line += f"; OPT at exits {shares}"
        lines.append(line)
    return "\n".join(lines)


# Snakemake decides on a dry run only after parsing, so the command line tells us.
if any(a in ("--dry-run", "--dryrun") or re.fullmatch(r"-[a-zA-Z]*n[a-zA-Z]*", a) for a in sys.argv[1:]):
    print("models (dataset/model: exits, cost of the whole network; OPT exits and their share of the cost):\n"
          + model_plan(), file=sys.stderr)
    print(
        f"{len(study_runs()) + len(eann_runs())} trainings ({len(eann_runs())} of them holding out a validation "
        "split: EANN members, E7); about "
        f"{estimated_gpu_hours():.1f} GPU-hours at the training throughput measured for compiled, "
        "CUDA-graphed ResANN(5, 16) on an H100 (docs/speed.md)",
        file=sys.stderr,
    )


def run_files(filename, models=None, weighting=None, eann=False):
    """`filename` in the run directory of every study run (or EANN member run), optionally only some
    models / one weighting."""
    return [
        f"{EANN_RUN if eann else RUN}/{filename}".format(dataset=d, model=m, weighting=w, seed=s)
        for d, m, w, s in (eann_runs() if eann else study_runs())
        if (models is None or m in models) and (weighting is None or w == weighting)
    ]


def _flag(key, value):
    name = key.replace("_", "-")
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    flag = f"--{name}"
    if isinstance(value, list):
        return " ".join([flag, *map(str, value)])
    return f"{flag} {shlex.quote(str(value))}"


def _model_flags(model):
    """`--arch A --arch-opt k=v ...` of a model spec, as `train` and `costs` both take them."""
    spec = MODELS[model]
    return [f"--arch {spec['arch']}", *(f"--arch-opt {shlex.quote(f'{k}={v}')}" for k, v in spec.items() if k != "arch")]


def _train_args(wildcards, eann):
    """The `python -m adaloss train` flags of one run (all but --out and --threads)."""
    from adaloss.weighting import split_label

    w = wildcards.weighting
    if w.startswith("opt"):
        weighting = f"--weighting opt --opt-exit {w[3:]}"
    else:
        name, scale = split_label(w)
        weighting = f"--weighting {name} --scale {scale}"
    seeds = f"--seeds {' '.join(map(str, SEEDS))}" if PACK_SEEDS else f"--seed {wildcards.seed}"
    args = [
        f"--dataset {wildcards.dataset} --model-name {wildcards.model} {seeds}",
        *_model_flags(wildcards.model),
        weighting,
        *(_flag(k, v) for k, v in sorted(train_options(wildcards.dataset, eann).items())),
    ]
    return " ".join(args)


def get_train_args(wildcards):
    return _train_args(wildcards, eann=False)


def get_eann_train_args(wildcards):
    return _train_args(wildcards, eann=True)


def get_train_out(pattern):
    """The --out of a training job: its run directory, or the pattern with {seed} left in when packed."""
    def out(wildcards):
        seed = "{seed}" if PACK_SEEDS else wildcards.seed
        return shlex.quote(pattern.format(**{**wildcards, "seed": seed}))

    return out


def job_runtime(wildcards):
    """Minutes one training job may take: `resources.runtime` per run it trains."""
    return config["resources"]["runtime"] * (len(SEEDS) if PACK_SEEDS else 1)


def get_exits():
    return run_files("exits.csv")


def get_metrics():
    return run_files("metrics.json")


def get_benchmarks():
    """The Snakemake benchmark file of every training job, laid out as its run directory (packed:
    one per (dataset, model, weighting), `.../{weighting}.tsv`)."""
    pattern = job_path("results/benchmarks/{pool}/{d}/{m}/{w}/seed{seed}.tsv")
    return sorted({pattern.format(pool=pool, d=d, m=m, w=w, seed=s)
                   for pool, runs in (("runs", study_runs()), ("eann_runs", eann_runs())) for d, m, w, s in runs})


def get_adaloss_metrics():
    return run_files("metrics.json", models=COMPARED, weighting="adaloss")


def get_adaloss_weights():
    return run_files("weights.csv", models=COMPARED, weighting="adaloss")


def get_eann_exits():
    """The EANN members' exits.csv (the pool also holds E7's runs, which E4 does not read)."""
    return [f"{EANN_RUN}/exits.csv".format(dataset=d, model=m, weighting=w, seed=s) for d, m, w, s in eann_runs()
            if m in E4.get("members", []) and w in E4.get("weightings", [])]


def get_costs_args(wildcards):
    """The `python -m adaloss costs` flags of one model on one dataset."""
    root = shlex.quote(train_options(wildcards.dataset)["data_root"])
    return " ".join([f"--dataset {wildcards.dataset} --data-root {root}", *_model_flags(wildcards.model)])


def get_latency():
    """The latency table of every compared model on each dataset that compares it."""
    return [f"results/latency/{d}/{m}.csv" for d in config["datasets"] for m in DATASET_COMPARE[d]]


def get_budgeted():
    """The budgeted.csv of every E7 run (written beside its checkpoint by `python -m adaloss budgeted`)."""
    return [f"{EANN_RUN}/budgeted.csv".format(dataset=d, model=m, weighting=w, seed=s)
            for d, m, w, s in budgeted_runs()]


def get_eann_metrics():
    return run_files("metrics.json", eann=True)


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
    return [f"results/figures/{e}.png" for e in EXPERIMENTS]


def get_report_tables():
    """The tables the report reads: the anytime and relative ones always, each experiment's own if selected."""
    tables = [*rules.anytime_errors.output, *rules.relative_to_opt.output, *rules.paper_relative_to_opt.output,
              *rules.runs_table.output]
    tables += [*rules.small_vs_large.output] if E3 else []
    tables += [*rules.eann.output] if E4 else []
    tables += [*rules.adaloss_weights.output] if "e5" in SELECTED else []
    tables += [*rules.weight_trajectories.output] if "e6" in SELECTED else []
    tables += [*rules.budgeted_table.output] if E7 else []
    tables += [*rules.latency_table.output]
    return tables


def get_report_args():
    """What the report needs to know of E3 and E4, when they run."""
    args = []
    if E3:
        args.append("--small-vs-large")
    if E4:
        args.append(f"--opt-model {E4['opt_model']} --eann-tolerance {E4['tolerance']}")
    return " ".join(args)


def get_final_output():
    return ["report/report.html", *(f"results/notebooks/{e}.html" for e in EXPERIMENTS)]
