"""The plan of a study: which runs a profile trains, in which pool, at which OPT exits, in which
training jobs and with which command lines.

A profile (config/*.yaml, validated against workflow/schemas/config.schema.yaml) names datasets,
models, weightings, seeds and experiments. `Plan` turns it into
* runs (dataset, model, weighting label, seed) in two pools: `runs`, trained on the whole training
  set as the authors did (do_validation=False), and `eann_runs`, holding out a validation split on
  which E4's EANN chooses and E7 fits its exit thresholds (one pool, so a run both need trains once);
* OPT networks at the exits whose anytime cost is nearest 1/4, 1/2, 3/4 and 1 of the total
  (docs/fidelity.md, D2), labelled `opt{k}`;
* E8's language-model runs (corpus, model, weighting, seed; beyond the paper, issue 20) in a pool of
  their own, `lm_runs`: each weighting of `lm.weightings` and OPT networks at the same budget points
  of the transformer's FLOPs per token, one `python -m adaloss train-lm` job per run;
* training jobs: one run, every seed of a run (`resources.pack_seeds`), or a pack of up to
  `train.pack` runs of one pool, dataset and model, trained in lockstep in one process;
* each job's `python -m adaloss train` command, the dry run's summary and GPU-hour estimate.

It lives in the package, not in workflow/rules/common.smk, because it is logic, not glue: as plain
Python it is tested by pytest (tests/test_plan.py) without Snakemake and, with injected exit costs,
without building a model; common.smk builds one `Plan` and the rules ask it.
"""

from __future__ import annotations

import itertools
import math
import shlex
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

__all__ = ["PYTHON", "POOLS", "LM_POOL", "EXPERIMENTS", "Run", "ExitFlops", "TrainJob", "Plan", "run_dir",
           "cli_flags", "split_evenly", "packs_of"]

# Commands run with the interpreter that runs Snakemake (a venv or conda env need not be on PATH;
# under Slurm, jobs start Snakemake with that same interpreter).
PYTHON = shlex.quote(sys.executable)
POOLS = ("runs", "eann_runs")  # the whole training set; a held-out validation split (EANN members, E7)
# One notebook per experiment, in the paper's order; a profile runs those whose e<k> it selects.
EXPERIMENTS = ("e1_anytime", "e2_relative_to_opt", "e3_small_vs_large", "e4_eann", "e5_weights_vs_difficulty",
               "e6_weight_trajectories", "e7_budgeted", "e8_lm")
LM_POOL = "lm_runs"  # E8's language-model runs (python -m adaloss train-lm), apart from the image pools
# What a profile that selects only e8 (config/lm.yaml) trains of the image study: nothing, so it need
# not name datasets or models; any it names are unused.
NO_IMAGES: dict[str, Any] = {"datasets": [], "models": {}, "compare": [], "weightings": []}

Run = tuple[str, str, str, int]  # (dataset, model, weighting label, seed)
ExitFlops = Callable[[str, str], Sequence[int]]  # (dataset, model) -> anytime FLOPs of each exit, cheapest first
T = TypeVar("T")


def _check(ok: Any, message: str) -> None:
    if not ok:
        raise ValueError(f"config: {message}")


def run_dir(pool: str, dataset: str, model: str, weighting: str, seed: int | str) -> str:
    """A run's directory; `{weighting}` or `{seed}` as values keep those placeholders (a pattern)."""
    return f"results/{pool}/{dataset}/{model}/{weighting}/seed{seed}"


def _cli_flag(key: str, value: Any) -> str:
    """One option as `python -m adaloss` takes it: `--key-name value`, a boolean as `--x`/`--no-x`, a
    list as several values."""
    name = key.replace("_", "-")
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    if isinstance(value, list):
        return " ".join([f"--{name}", *map(str, value)])
    return f"--{name} {shlex.quote(str(value))}"


def cli_flags(options: Mapping[str, Any]) -> str:
    """Every option of `options` as flags, in key order (so a command line is the same on every parse)."""
    return " ".join(_cli_flag(k, v) for k, v in sorted(options.items()))


def split_evenly(items: Sequence[T], parts: int) -> list[list[T]]:
    """`items` in order, cut into `parts` consecutive chunks whose sizes differ by at most one, the
    larger first (21 into 3: 7, 7, 7; 10 into 3: 4, 3, 3)."""
    size, extra = divmod(len(items), parts)
    ends = list(itertools.accumulate(size + (i < extra) for i in range(parts)))
    return [list(items[start:end]) for start, end in zip([0, *ends], ends)]


def packs_of(items: Sequence[T], size: int) -> list[list[T]]:
    """As few packs of at most `size` items as hold them all, balanced (21 items, size 8: 7, 7, 7 rather
    than 8, 8, 5), so no pack waits on a longer one and the packs' runtimes match."""
    return split_evenly(items, math.ceil(len(items) / size))


def _opt_exit(label: str) -> int | None:
    """k of an OPT network's label `opt{k}`; None for a weighting's label."""
    return int(label[3:]) if label.startswith("opt") else None


def _weighting_flags(label: str) -> str:
    """`--weighting ... --opt-exit k` or `--weighting ... --scale ...` of a run's weighting label."""
    from .weighting import split_label

    k = _opt_exit(label)
    if k is not None:
        return f"--weighting opt --opt-exit {k}"
    name, scale = split_label(label)
    return f"--weighting {name} --scale {scale}"


@dataclass(frozen=True, order=True)
class TrainJob:
    """One training job: runs of one pool, dataset and model that one process trains.

    `name` is its file stem under the model, in logs and benchmarks: `{weighting}/seed{seed}` (one
    run), `{weighting}` (every seed of a run, `resources.pack_seeds`) or `pack{i}` (a pack). `out` is
    the job's `train --out`: the run directory, with `{seed}` (and, in a pack, `{weighting}`) left for
    the trainer to fill per run.
    """

    pool: str
    dataset: str
    model: str
    name: str
    out: str
    runs: tuple[Run, ...]
    packed: bool = False

    @property
    def rule(self) -> str:
        """The Snakemake rule that runs it: the wildcard rule `train` or `train_eann_member`, or the
        pack's own rule, named after the pack (a pack's outputs are no wildcard pattern)."""
        if self.packed:
            return f"train_pack_{self.pool}_{self.dataset}_{self.model}_{self.name.removeprefix('pack')}"
        return {"runs": "train", "eann_runs": "train_eann_member", LM_POOL: "train_lm"}[self.pool]

    @property
    def log(self) -> str:
        """`logs/{rule}/...` as the job's runs are laid out; a pack's `logs/train_pack/{pool}/...`."""
        folder = f"train_pack/{self.pool}" if self.packed else self.rule
        return f"logs/{folder}/{self.dataset}/{self.model}/{self.name}.log"

    @property
    def benchmark(self) -> str:
        """Snakemake's benchmark of the job, laid out as its runs (adaloss.tables reads the layout)."""
        return f"results/benchmarks/{self.pool}/{self.dataset}/{self.model}/{self.name}.tsv"

    def files(self, filename: str) -> list[str]:
        """`filename` in the directory of every run of the job."""
        return [f"{run_dir(self.pool, d, m, w, s)}/{filename}" for d, m, w, s in self.runs]


class Plan:
    """A validated profile's runs, jobs and commands, worked out once and cached.

    `config` is the profile as Snakemake validated it (every default filled in). `dataset_train` is
    its `dataset_train` as written: validation fills every `train` default into those overrides too,
    where they would replace the profile's `train` (default: config's own, for a config that was not
    filled in). `costs` gives the anytime FLOPs of each exit of a (dataset, model); by default they
    are counted by building the model (adaloss.flops.cached_exit_costs), a test passes its own.
    A config that cannot be planned raises ValueError("config: ..."), naming the keys.
    """

    def __init__(self, config: Mapping[str, Any], dataset_train: Mapping[str, Any] | None = None,
                 costs: ExitFlops | None = None, throughput: Sequence[Mapping[str, Any]] = ()) -> None:
        self.image_study = any(e != "e8" for e in config["experiments"])  # False: E8 alone (config/lm.yaml)
        absent = [k for k in NO_IMAGES if k not in config]
        _check(not (self.image_study and absent), f"{', '.join(absent)} must be given when an image experiment "
                                                  "(e1-e7) is selected")
        config = config if self.image_study else {**config, **NO_IMAGES}
        self.config = config
        # packed training throughput measured on a GPU (adaloss.flops.read_pack_throughput), if any
        self.throughput = list(throughput)
        self.models: Mapping[str, dict[str, Any]] = config["models"]
        self.seeds: list[int] = config["seeds"]
        self.selected: list[str] = config["experiments"]  # a profile may run only some (laptop, GPU-quick)
        self.e3: dict[str, Any] = config.get("small_vs_large", {}) if "e3" in self.selected else {}
        # E3's (small, large) pairs: `small` and `large` are one model each or equal-length lists, zipped
        small, large = ([self.e3[k]] if isinstance(self.e3.get(k, []), str) else self.e3.get(k, [])
                        for k in ("small", "large"))
        self.e3_pairs = list(zip(small, large))
        self.e4: dict[str, Any] = config.get("eann", {}) if "e4" in self.selected else {}
        self.e7: dict[str, Any] = config.get("budgeted", {}) if "e7" in self.selected else {}
        self.lm: dict[str, Any] = config.get("lm", {}) if "e8" in self.selected else {}
        self.lm_models: dict[str, dict[str, Any]] = self.lm.get("models", {})
        self.scale: dict[str, list[str]] = config["loss_scale"]
        self.pack: int = config["train"]["pack"]
        # resources.pack_seeds: one job trains every seed of a (dataset, model, weighting) one after
        # another, so `import torch` and the job's start-up are paid once per job (packs group seeds already)
        self.pack_seeds: bool = config["resources"]["pack_seeds"] and self.pack == 1
        self._count = costs or self._counted_flops
        self._flops: dict[tuple[str, str], list[int]] = {}

        stray = sorted(set(config["dataset_compare"]) - set(config["datasets"]))
        if stray:
            print(f"config: ignoring dataset_compare entries {stray}, which are not in `datasets`", file=sys.stderr)
        self.dataset_compare = {d: config["dataset_compare"].get(d, config["compare"]) for d in config["datasets"]}
        # Every model some dataset compares: E4's reference and the ablation must be among them.
        self.compared = sorted({m for models in self.dataset_compare.values() for m in models})
        self.held_out_fraction: float | None = self.e4.get("val_fraction") or self.e7.get("val_fraction")
        written = config.get("dataset_train", {}) if dataset_train is None else dataset_train
        self._check_config(small, large, written)
        self._check_lm()
        stray = sorted(set(written) - set(config["datasets"]))
        if stray:  # a profile that replaces `datasets` may keep another's overrides: they change nothing
            print(f"config: ignoring dataset_train entries {stray}, which are not in `datasets`", file=sys.stderr)
        self.dataset_train = {d: v for d, v in written.items() if d not in stray}
        self.weightings = sorted({*config["weightings"], *(self.e3.get(k) for k in ("small_weighting",
                                                                                     "large_weighting")),
                                  *self.e4.get("weightings", []), *self.scale["weightings"],
                                  *self.e7.get("weightings", [])} - {None})
        self.experiments = [e for e in EXPERIMENTS if e.split("_")[0] in self.selected]

    def _check_config(self, small: list[str], large: list[str], dataset_train: Mapping[str, Any]) -> None:
        """The rules across keys that the schema cannot express; the first broken one is a ValueError."""
        e3, e4, e7 = self.e3, self.e4, self.e7
        for name, key, given in (("e3", "small_vs_large", e3), ("e4", "eann", e4), ("e7", "budgeted", e7),
                                 ("e8", "lm", self.lm)):
            _check(name not in self.selected or given, f"experiment {name} is selected but `{key}` is not given")
        undefined = sorted({*self.compared, *(m for pair in self.e3_pairs for m in pair), *e4.get("members", []),
                            e4.get("opt_model"), *self.scale["models"], *e7.get("models", [])}
                           - set(self.models) - {None})
        _check(not undefined, f"models {undefined} are used but not defined under `models` ({sorted(self.models)})")
        _check(not e4 or e4["opt_model"] in self.compared,
               f"eann.opt_model {e4.get('opt_model')!r} must be a compared model (`compare` or `dataset_compare`)")
        _check(set(self.scale["models"]) <= set(self.compared),
               f"loss_scale.models {self.scale['models']} must be compared models "
               "(the ablation is read against their OPT)")
        _check(set(e7.get("models", [])) <= set(self.compared),
               f"budgeted.models {e7.get('models')} must be compared models "
               "(their OPT networks are E7's reference)")
        _check(not (e4 and e7) or e4["val_fraction"] == e7["val_fraction"],
               f"eann.val_fraction {e4.get('val_fraction')} and budgeted.val_fraction {e7.get('val_fraction')} "
               "differ: their runs share one held-out pool (eann_runs/), so they must hold out the same share")
        _check(len(small) == len(large),
               f"small_vs_large.small and .large must list as many models: {small} vs {large}")
        _check(all(s in self.compared for s, _ in self.e3_pairs),
               f"small_vs_large.small {e3.get('small')!r} must be compared models "
               "(their AdaLoss and CONST runs are E1's)")
        _check(not self.image_study or "adaloss" in self.config["weightings"],
               "`weightings` must include adaloss (E1, E2, E5, E6)")
        packed = sorted(d for d, options in dataset_train.items() if "pack" in options)
        _check(not packed, f"dataset_train entries {packed} set `pack`, which is one setting of the whole study: "
                           "set it under `train`")

    def _check_lm(self) -> None:
        """E8's rules across keys: its models apart from the image ones (both are labelled by name
        in runs.csv and the flop cache of this plan), and the two weightings its claims compare."""
        lm = self.lm
        if not lm:
            return
        shared = sorted(set(self.lm_models) & set(self.models))
        _check(not shared, f"lm.models {shared} are also image models under `models`: give them other names")
        missing = sorted({"adaloss", "tt_uniform"} - set(lm["weightings"]))
        _check(not missing, f"lm.weightings must include {missing}: E8's claims compare AdaLoss with "
                            "torchtune's uniform scale")

    # -- what every run of a dataset trains with, and what its model costs

    def train_options(self, dataset: str, pool: str = "runs") -> dict[str, Any]:
        """The TrainConfig fields of every run on `dataset`: `train` (less `pack`, which is the plan's),
        then its `dataset_train` overrides; a run of the held-out pool (`eann_runs`: EANN members,
        E7's runs) also holds out `held_out_fraction` of the training set."""
        options = {k: v for k, v in self.config["train"].items() if k != "pack"}
        options |= self.dataset_train.get(dataset, {})
        return {**options, "val_fraction": self.held_out_fraction} if pool == "eann_runs" else options

    def _counted_flops(self, dataset: str, model: str) -> list[int]:
        """The anytime FLOPs of each exit of `model` on `dataset`, counted once and cached in
        {data_root}/.adaloss_cache/costs/ (every Slurm job rebuilds the DAG, and every training job
        of the model reads them from there); of E8's transformers, per token (`_token_flops`)."""
        if model in self.lm_models:
            return self._token_flops(model)
        import torch

        from .data import dataset_info
        from .flops import COSTS_CACHE, cached_exit_costs

        torch.set_num_threads(1)  # tiny single-image passes: threads only add contention
        root = self.train_options(dataset)["data_root"]
        channels, size, classes = dataset_info(dataset, root)
        spec = self.models[model]
        options = {k: v for k, v in spec.items() if k != "arch"}
        costs = cached_exit_costs(spec["arch"], channels, classes, size, options, f"{root}/{COSTS_CACHE}")
        return [c.flops for c in costs]

    def _token_flops(self, model: str) -> list[int]:
        """The anytime FLOPs per token of each exit of E8's transformer `model` (lm_train.token_costs),
        counted by building it: a few hundred milliseconds, so not cached on disk."""
        import torch

        from .lm_train import token_costs
        from .models import build_model
        from .textdata import VOCAB

        torch.set_num_threads(1)
        spec = self.lm_models[model]
        options = {k: v for k, v in spec.items() if k != "context"}
        return [c.flops for c in token_costs(build_model("transformer", 1, VOCAB, spec["context"], **options))]

    def exit_flops(self, dataset: str, model: str) -> list[int]:
        """The anytime FLOPs of each exit of `model` on `dataset`, cheapest first (asked once per pair)."""
        if (dataset, model) not in self._flops:
            self._flops[dataset, model] = list(self._count(dataset, model))
        return self._flops[dataset, model]

    def opt_exits(self, dataset: str, model: str) -> list[int]:
        """The exits of `model` on `dataset` whose anytime cost is nearest 1/4, 1/2, 3/4 and 1 of its total
        (deduplicated), the budget points of docs/fidelity.md (D2): one OPT network is trained for each."""
        from .flops import opt_exits

        return sorted(set(opt_exits(self.exit_flops(dataset, model))))

    # -- the runs

    @cached_property
    def study_runs(self) -> tuple[Run, ...]:
        """Every (dataset, model, weighting, seed) trained on the whole training set, each exactly once.
        E3 and the loss-scale ablation run on a dataset only where their models are compared there."""
        runs = set()
        weightings, scale, e3 = self.config["weightings"], self.scale, self.e3
        for d in self.config["datasets"]:
            compared = self.dataset_compare[d]
            for s in self.seeds:
                for m in compared:
                    runs |= {(d, m, w, s) for w in weightings}
                    runs |= {(d, m, f"opt{k}", s) for k in self.opt_exits(d, m)}
                runs |= {(d, m, w, s) for m in scale["models"] if m in compared for w in scale["weightings"]}
                for small, large in self.e3_pairs:  # the control: the small ANN with the large one's scheme
                    if small in compared:
                        runs |= {(d, small, e3["small_weighting"], s), (d, small, e3["large_weighting"], s),
                                 (d, large, e3["large_weighting"], s)}
        return tuple(sorted(runs))

    @cached_property
    def budgeted_runs(self) -> tuple[Run, ...]:
        """Every (dataset, model, weighting, seed) E7 evaluates by early exit, on the datasets where its
        models are compared; trained with a hold-out split, on which the thresholds are fit."""
        e7 = self.e7
        return tuple(sorted({(d, m, w, s) for d in self.config["datasets"] for m in e7.get("models", [])
                             if m in self.dataset_compare[d] for w in e7.get("weightings", []) for s in self.seeds}))

    @cached_property
    def eann_runs(self) -> tuple[Run, ...]:
        """Every (dataset, model, weighting, seed) of the held-out pool: the EANN members, on the datasets
        where E4's reference model is compared, and E7's runs."""
        e4 = self.e4
        members = {(d, m, w, s) for d in self.config["datasets"] if e4.get("opt_model") in self.dataset_compare[d]
                   for s in self.seeds for m in e4.get("members", []) for w in e4.get("weightings", [])}
        return tuple(sorted(members | set(self.budgeted_runs)))

    def runs(self, pool: str) -> tuple[Run, ...]:
        """The runs of one pool (POOLS or LM_POOL), sorted."""
        return getattr(self, {"runs": "study_runs", "eann_runs": "eann_runs", LM_POOL: "lm_runs"}[pool])

    def run_files(self, filename: str, pool: str = "runs", models: Collection[str] | None = None,
                  weightings: Collection[str] | None = None) -> list[str]:
        """`filename` in the directory of every run of `pool`, optionally only of some models or weightings."""
        return [f"{run_dir(pool, d, m, w, s)}/{filename}" for d, m, w, s in self.runs(pool)
                if (models is None or m in models) and (weightings is None or w in weightings)]

    def budgeted_files(self) -> list[str]:
        """The budgeted.csv of every E7 run (written beside its checkpoint by `python -m adaloss budgeted`)."""
        return [f"{run_dir('eann_runs', d, m, w, s)}/budgeted.csv" for d, m, w, s in self.budgeted_runs]

    def latency_files(self) -> list[str]:
        """The latency table of every compared model on each dataset that compares it."""
        return [f"results/latency/{d}/{m}.csv" for d in self.config["datasets"] for m in self.dataset_compare[d]]

    # -- the training jobs and their commands

    def job(self, pool: str, dataset: str, model: str, weighting: str, seed: int | str | None = None) -> TrainJob:
        """The unpacked job (`train.pack` 1) that trains a run: the run alone, or every seed of it when
        `resources.pack_seeds` is set (`seed` is then not used). Wildcards for every value give the
        wildcard rules' patterns."""
        if self.pack_seeds:
            runs = tuple((dataset, model, weighting, s) for s in self.seeds)
            return TrainJob(pool, dataset, model, weighting, run_dir(pool, dataset, model, weighting, "{seed}"), runs)
        return TrainJob(pool, dataset, model, f"{weighting}/seed{seed}", run_dir(pool, dataset, model, weighting, seed),
                        ((dataset, model, weighting, seed),))

    def _packs(self, pool: str) -> list[TrainJob]:
        """The runs of `pool`, per (dataset, model), in balanced packs of at most `train.pack`."""
        jobs = []
        for (d, m), group in itertools.groupby(self.runs(pool), key=lambda run: run[:2]):
            out = run_dir(pool, d, m, "{weighting}", "{seed}")
            jobs += [TrainJob(pool, d, m, f"pack{i}", out, tuple(runs), packed=True)
                     for i, runs in enumerate(packs_of(list(group), self.pack))]
        return jobs

    @cached_property
    def jobs(self) -> tuple[TrainJob, ...]:
        """Every training job of the study: one per pack when `train.pack` > 1, else one per run (per
        run's seeds with `resources.pack_seeds`). A pack holds runs of one pool, dataset and model, so
        one epoch count and one set of train options."""
        if self.pack > 1:
            return tuple(job for pool in POOLS for job in self._packs(pool))
        return tuple(sorted({self.job(pool, d, m, w, s) for pool in POOLS for d, m, w, s in self.runs(pool)}))

    def train_command(self, job: TrainJob, threads: int) -> str:
        """The job's `python -m adaloss train` command line (a pack's lists its runs as `--runs LABEL:SEED`,
        with the labels of the run directories)."""
        d, m = job.dataset, job.model
        if job.packed:
            runs = " ".join(f"{w}:{s}" for _, _, w, s in job.runs)
            what, weighting = [f"--runs {runs} --pack {self.pack}", f"--dataset {d} --model-name {m}"], []
        else:
            seeds = (f"--seeds {' '.join(str(s) for *_, s in job.runs)}" if self.pack_seeds
                     else f"--seed {job.runs[0][3]}")
            what, weighting = [f"--dataset {d} --model-name {m} {seeds}"], [_weighting_flags(job.runs[0][2])]
        return " ".join([f"{PYTHON} -m adaloss train --out {shlex.quote(job.out)}", *what, *self.model_flags(m),
                         *weighting, cli_flags(self.train_options(d, job.pool)),
                         f"--threads {threads} --no-progress --restart-on-change"])

    def runtime(self, job: TrainJob) -> int:
        """Minutes the job may take: `resources.runtime` per run it trains."""
        return self.config["resources"]["runtime"] * len(job.runs)

    def model_flags(self, model: str) -> list[str]:
        """`--arch A --arch-opt k=v ...` of a model spec, as `train` and `costs` both take them."""
        spec = self.models[model]
        return [f"--arch {spec['arch']}",
                *(f"--arch-opt {shlex.quote(f'{k}={v}')}" for k, v in spec.items() if k != "arch")]

    def costs_args(self, dataset: str, model: str) -> str:
        """The `python -m adaloss costs` flags of one model on one dataset."""
        root = shlex.quote(self.train_options(dataset)["data_root"])
        return " ".join([f"--dataset {dataset} --data-root {root}", *self.model_flags(model)])

    def report_args(self) -> str:
        """What `python -m adaloss report` needs to know of which experiments ran: E3, E4, E8, and
        whether any image experiment did."""
        args = ["--small-vs-large"] if self.e3 else []
        args += [] if self.image_study else ["--no-image-study"]
        args += ["--lm"] if self.lm else []
        if self.e4:
            args.append(f"--opt-model {self.e4['opt_model']} --eann-tolerance {self.e4['tolerance']}")
        return " ".join(args)

    # -- E8: the language-model runs and their jobs

    @cached_property
    def lm_runs(self) -> tuple[Run, ...]:
        """Every (corpus, model, weighting, seed) of E8: each of `lm.weightings` and an OPT network at
        each of the transformer's `opt_exits` (the budget points of its FLOPs per token), per seed."""
        if not self.lm:
            return ()
        corpus = self.lm["corpus"]
        return tuple(sorted((corpus, m, w, s) for m in self.lm_models for s in self.seeds
                            for w in [*self.lm["weightings"], *(f"opt{k}" for k in self.opt_exits(corpus, m))]))

    def lm_job(self, model: str, weighting: str, seed: int | str) -> TrainJob:
        """The job that trains one E8 run (one run per job); wildcards give the rule `train_lm`'s patterns."""
        corpus = self.lm["corpus"]
        return TrainJob(LM_POOL, corpus, model, f"{weighting}/seed{seed}",
                        run_dir(LM_POOL, corpus, model, weighting, seed), ((corpus, model, weighting, seed),))

    @cached_property
    def lm_jobs(self) -> tuple[TrainJob, ...]:
        """Every E8 training job, one per run."""
        return tuple(self.lm_job(m, w, s) for _, m, w, s in self.lm_runs)

    def lm_train_command(self, job: TrainJob, threads: int) -> str:
        """The E8 job's `python -m adaloss train-lm` command line: its model spec, weighting (torchtune's
        scales with `lm.e_scale`), seed and `lm.train`."""
        from .weighting import TORCHTUNE_SCHEMES, split_label

        corpus, model, weighting, seed = job.runs[0]
        torchtune = _opt_exit(weighting) is None and split_label(weighting)[0] in TORCHTUNE_SCHEMES
        return " ".join([f"{PYTHON} -m adaloss train-lm --out {shlex.quote(job.out)} --corpus {shlex.quote(corpus)}",
                         f"--model-name {model} --seed {seed} {_weighting_flags(weighting)}",
                         *([f"--e-scale {self.lm['e_scale']}"] if torchtune else []),
                         cli_flags({**self.lm_models[model], **self.lm["train"]}),
                         f"--threads {threads} --no-progress --restart-on-change"])

    def lm_summary(self) -> str:
        """What a dry run prints of E8: each transformer's exits, FLOPs per token and OPT exits, and
        the number of trainings; empty when E8 is not selected."""
        from .flops import cost_fractions

        if not self.lm:
            return ""
        lines = ["E8 language models (corpus/model: exits, FLOPs per token of the whole network; OPT exits):"]
        for m in self.lm_models:
            costs, opts = self.exit_flops(self.lm["corpus"], m), self.opt_exits(self.lm["corpus"], m)
            shares = ", ".join(f"{k} ({100 * f:.0f} %)" for k, f in zip(opts, cost_fractions(costs, opts)))
            lines.append(f"  {self.lm['corpus']}/{m}: {len(costs)} exits, {costs[-1] / 1e3:.1f} kFLOPs per token; "
                         f"OPT at exits {shares}")
        return "\n".join([*lines, f"{len(self.lm_runs)} language-model trainings (E8)"])

    # -- the dry run's summary

    def estimated_gpu_hours(self) -> float:
        """GPU-hours of every training of the study at measured throughput (adaloss.flops): the packed
        throughput measured per network size when `throughput` has it, else the one measurement of
        ResANN(5, 16). In a pack every run computes the whole network, OPT networks too."""
        from .data import train_size
        from .flops import packed_tflops, training_gpu_hours

        hours = 0.0
        for pool in POOLS:
            for d, m, w, _ in self.runs(pool):
                opts = self.train_options(d, pool)
                costs = self.exit_flops(d, m)
                k = _opt_exit(w)
                flops = costs[-1 if k is None or self.pack > 1 else k]
                images = train_size(d, opts["data_root"])
                images = int(min(images, opts["train_subset"] or images) * (1 - opts["val_fraction"]))
                measured = packed_tflops(flops, self.pack, self.throughput)
                hours += training_gpu_hours(flops, images, opts["epochs"], *([measured] if measured else []))
        return hours

    def throughput_source(self) -> str:
        """Which measurement the GPU-hour estimate rests on, in words."""
        sizes = sorted({r["pack"] for r in self.throughput if r["pack"] <= self.pack})
        if not sizes:
            return ("the training throughput measured for compiled, CUDA-graphed ResANN(5, 16) on an H100 "
                    "(docs/speed.md); packed throughput per network size is not measured on a GPU yet "
                    "(scripts/gpu_pack_check.sh)")
        device = sorted({r["device_name"] for r in self.throughput})
        return (f"the packed throughput measured per network size in packs of {sizes[-1]} on {', '.join(device)} "
                f"(docs/measurements/gpu_pack_throughput.csv; train.pack {self.pack})")

    def model_plan(self) -> str:
        """One line per (dataset, model) trained: its exits and the exits its OPT networks sit at, with
        their measured share of the cost."""
        from .flops import cost_fractions

        lines = []
        for d, m in sorted({(d, m) for d, m, _, _ in (*self.study_runs, *self.eann_runs)}):
            costs = self.exit_flops(d, m)
            line = f"  {d}/{m}: {len(costs)} exits, {costs[-1] / 1e6:.1f} MFLOPs"
            opts = self.opt_exits(d, m) if m in self.dataset_compare[d] else []
            if opts:
                shares = ", ".join(f"{k} ({100 * f:.0f} %)" for k, f in zip(opts, cost_fractions(costs, opts)))
                line += f"; OPT at exits {shares}"
            lines.append(line)
        return "\n".join(lines)

    def summary(self) -> str:
        """What a dry run prints: the models, their OPT exits, the number of trainings and GPU-hours."""
        held_out = len(self.eann_runs)
        return (
            "models (dataset/model: exits, cost of the whole network; OPT exits and their share of the cost):\n"
            f"{self.model_plan()}\n"
            f"{len(self.study_runs) + held_out} trainings ({held_out} of them holding out a validation split: "
            f"EANN members, E7); about {self.estimated_gpu_hours():.1f} GPU-hours at {self.throughput_source()}"
        )

