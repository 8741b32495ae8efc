"""The study through a real Slurm: a one-node cluster on localhost with accounting (munged, MariaDB,
slurmdbd, slurmctld, slurmd), started by scripts/slurm/start_cluster.sh, driven by profiles/slurm.

Needs root (it starts daemons and writes /etc/slurm/slurm.conf, restored afterwards) and Debian's
slurm-wlm, slurmdbd, munge and mariadb-server, which it installs with apt-get when missing; skipped
otherwise. docs/cluster.md describes the cluster, the profile and what each test shows.

The smoke study's whole DAG takes about 7 minutes through this cluster on 2 CPUs (each Slurm job
spends ~20 s starting two nested Snakemake processes that parse the workflow), too long for the
test suite: by default the workflow test runs one gather rule and the training jobs it needs.
scripts/slurm/run_smoke_on_slurm.sh sets ADALOSS_SLURM_SMOKE=full to run all of it, up to the report.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "slurm"
# Jobs run `python -m snakemake` and `python -m adaloss` from this interpreter's environment.
VENV_BIN = Path(sys.executable).parent
DAEMONS = ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd")
FULL_SMOKE = os.environ.get("ADALOSS_SLURM_SMOKE") == "full"
# The workflow as a checkout holds it; results, logs and .snakemake are made in the copy.
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "profiles")
SACCT_FIELDS = ("JobID", "JobName", "Comment", "Partition", "AllocCPUS", "ReqMem", "Timelimit", "State", "Elapsed")
# What the training jobs ask for, set in the config (not the profile's defaults): Slurm must show it.
TRAIN_RESOURCES = {"threads": 1, "mem_mb": 1200, "runtime": 7, "slurm_partition": "batch"}
ADALOSS_RUN = "results/runs/digits/resann/adaloss/seed0"


def _why_not_runnable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: it starts munged, slurmdbd, slurmctld, slurmd and writes /etc/slurm/slurm.conf"
    if not all(shutil.which(d) for d in DAEMONS) and shutil.which("apt-get") is None:
        return "needs Debian's slurm-wlm, slurmdbd, munge and mariadb-server, or apt-get to install them"
    return None


WHY_NOT = _why_not_runnable()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]


def job_env() -> dict[str, str]:
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    # sbatch and srun read these; one left over from an outer Slurm job would point them elsewhere.
    return {k: v for k, v in env.items() if not k.startswith("SLURM_")}


def sacct(job_ids: list[str]) -> list[dict[str, str]]:
    """One row per job (allocations only, no steps), as sacct's own strings."""
    out = subprocess.run(
        ["sacct", "--allocations", "--parsable2", "--noheader", f"--format={','.join(SACCT_FIELDS)}",
         f"--jobs={','.join(job_ids)}"],
        check=True, capture_output=True, text=True,
    ).stdout
    return [dict(zip(SACCT_FIELDS, line.split("|"))) for line in out.splitlines()]


def state(row: dict[str, str]) -> str:
    return row["State"].split()[0]  # "CANCELLED by 0" -> "CANCELLED"


def job_state(job_id: str) -> str:
    rows = sacct([job_id])
    return state(rows[0]) if rows else "UNKNOWN"  # not in slurmdbd yet


def listing(rows: list[dict[str, str]]) -> str:
    """sacct's rows without JobName (the run's UUID, the same for every job of one Snakemake run)."""
    fields = [f for f in SACCT_FIELDS if f != "JobName"]
    return "\n".join(["|".join(fields), *("|".join(r[f] for f in fields) for r in rows)])


def wait_for(condition, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.2)


def print_now(capsys, text: str) -> None:
    """Print past pytest's capture: the timings and the sacct listing are this test's report."""
    with capsys.disabled():
        print(f"\n{text}")


def copy_study(dest: Path, overlay: dict) -> Path:
    """The workflow in a folder of its own, with `overlay` as config/test_slurm.yaml."""
    ignore = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    dest.mkdir()
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    (dest / "config" / "test_slurm.yaml").write_text(yaml.safe_dump(overlay))
    return dest


def snakemake(*args: str, timeout: int) -> list[str]:
    """What a user types with the Slurm profile, on the smoke config, plus the test's overlay.

    timeout -k: Snakemake can ignore SIGTERM while it waits on jobs, so SIGKILL follows.
    """
    return ["timeout", "-k", "15", str(timeout), sys.executable, "-m", "snakemake",
            "--profile", "profiles/slurm", "--configfile", "config/smoke.yaml", "config/test_slurm.yaml",
            "--slurm-init-seconds-before-status-checks", "1", *args]


def submissions(log: str) -> dict[str, str]:
    """Slurm job ID -> rule, from Snakemake's log lines `Job N has been submitted with SLURM jobid M`."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", log)
    return dict(found)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running test cluster for this module; stopped, and /etc/slurm restored, whatever happens."""
    state_dir = tmp_path_factory.mktemp("slurm-cluster")
    try:
        subprocess.run([SCRIPTS / "start_cluster.sh", state_dir], check=True, timeout=900)  # apt-get included
        yield state_dir
    finally:
        subprocess.run([SCRIPTS / "stop_cluster.sh", state_dir], timeout=180)


def test_smoke_study_jobs_go_through_sbatch_with_the_resources_of_the_config(cluster, tmp_path, capsys):
    started = time.monotonic()
    # unpacked (the smoke profile packs its runs): one `train` job per run, whose resources are checked
    study = copy_study(tmp_path / "study", {"resources": TRAIN_RESOURCES, "train": {"pack": 1}})
    targets = [] if FULL_SMOKE else ["results/tables/adaloss_weights.csv"]
    env = job_env()
    dry = subprocess.run(snakemake(*targets, "--dry-run", "--quiet", "rules", timeout=300),
                         cwd=study, env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    stats = dry.stdout + dry.stderr
    planned = dict(re.findall(r"^(\w+)\s+(\d+)$", stats[stats.index("Job stats:"):], re.M))
    planned = {rule: int(n) for rule, n in planned.items() if rule != "total"}

    run = subprocess.run(snakemake(*targets, timeout=1500 if FULL_SMOKE else 600),
                         cwd=study, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = run.stdout
    (tmp_path / "snakemake.log").write_text(log)
    assert run.returncode == 0, log[-5000:]

    # Every job of the DAG ran once: on Slurm, or (localrules) beside Snakemake.
    remote = re.findall(r"^rule (\w+):$", log, re.M)
    local = re.findall(r"^localrule (\w+):$", log, re.M)
    ran = {rule: remote.count(rule) + local.count(rule) for rule in {*remote, *local}}
    assert ran == planned
    assert "train" in remote and "train" not in local

    # Each remote job went through sbatch, and sacct lists exactly those, all completed.
    jobs = submissions(log)
    assert sorted(jobs.values()) == sorted(remote)
    rows = sacct(list(jobs))
    assert sorted(r["JobID"] for r in rows) == sorted(jobs)
    assert all(state(r) == "COMPLETED" for r in rows), listing(rows)
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    for r in rows:
        assert r["JobName"] == run_id and r["Comment"].startswith(f"rule_{jobs[r['JobID']]}")
        if jobs[r["JobID"]] == "train":
            assert (r["Partition"], r["AllocCPUS"], r["ReqMem"], r["Timelimit"]) == (
                TRAIN_RESOURCES["slurm_partition"], str(TRAIN_RESOURCES["threads"]),
                f"{TRAIN_RESOURCES['mem_mb']}M", f"00:{TRAIN_RESOURCES['runtime']:02d}:00",
            ), r

    for target in targets or ["report/report.html"]:
        assert (study / target).stat().st_size > 0
    print_now(capsys, f"{'whole smoke study' if FULL_SMOKE else 'targets ' + ' '.join(targets)}: "
                      f"{len(rows)} Slurm jobs, {len(local)} local jobs, {time.monotonic() - started:.0f} s\n"
                      f"{listing(rows)}")


def test_snakemake_resubmits_a_cancelled_training_job_and_it_resumes(cluster, tmp_path, capsys):
    """scancel a training job of the workflow after its first checkpoint: the profile's retries
    submit it again, and the new job continues after the saved epoch."""
    started = time.monotonic()
    study = copy_study(tmp_path / "study", {"train": {"epochs": 40, "pack": 1}})  # 0.2-0.4 s per epoch; one run a job
    checkpoint = study / ADALOSS_RUN / "checkpoint.pt"
    with open(tmp_path / "snakemake.log", "w+") as out:
        proc = subprocess.Popen(snakemake(f"{ADALOSS_RUN}/exits.csv", timeout=600),
                                cwd=study, env=job_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: checkpoint.exists() or proc.poll() is not None, "the first checkpoint", 300)
            assert proc.poll() is None, (tmp_path / "snakemake.log").read_text()[-5000:]
            queued = subprocess.run(["squeue", "--noheader", "--format=%i"],
                                    check=True, capture_output=True, text=True).stdout.split()
            assert len(queued) == 1, queued
            subprocess.run(["scancel", queued[0]], check=True)
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        out.seek(0)
        log = out.read()
    assert proc.returncode == 0, log[-5000:]

    jobs = submissions(log)
    rows = sacct(list(jobs))
    assert [state(r) for r in rows] == ["CANCELLED", "COMPLETED"], listing(rows)
    train_log = (study / "logs/train/digits/resann/adaloss/seed0.log").read_text()
    resumed = re.search(r"resumed digits/resann/adaloss/seed0 after epoch (\d+)", train_log)
    assert resumed and 1 <= int(resumed.group(1)) < 40, train_log
    assert len((study / ADALOSS_RUN / "log.csv").read_text().splitlines()) == 1 + 40  # header + every epoch once
    print_now(capsys, f"cancelled under Snakemake, resubmitted, resumed after epoch {resumed.group(1)}; "
                      f"{time.monotonic() - started:.0f} s\n{listing(rows)}")


def test_a_cancelled_training_job_resumes_from_its_checkpoint_when_resubmitted(cluster, tmp_path, capsys):
    """scancel mid-training, sbatch the same command again: it continues after the last epoch saved.

    The job runs in another working directory than the one it was submitted from, and every path
    it gets is absolute: what a job on a cluster node sees of a shared file system.
    """
    started = time.monotonic()
    run_dir = tmp_path / "shared" / ADALOSS_RUN
    job_cwd = tmp_path / "node-scratch"
    job_cwd.mkdir()
    epochs = 40  # 0.2-0.4 s each on one CPU: many seconds to cancel in after the first checkpoint
    train = [sys.executable, "-m", "adaloss", "train", "--dataset", "digits", "--arch-opt", "n=1",
             "--arch-opt", "width=8", "--epochs", str(epochs), "--threads", "1", "--no-progress",
             "--out", str(run_dir), "--data-root", str(tmp_path / "shared" / "data")]

    def sbatch(name: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sbatch", "--parsable", f"--job-name=adaloss-{name}", f"--chdir={job_cwd}",
             f"--output={tmp_path / name}.out", f"--error={tmp_path / name}.err",
             "--cpus-per-task=1", "--mem=2000", "--time=10", *extra, f"--wrap={shlex.join(train)}"],
            capture_output=True, text=True, env=job_env(), timeout=300,
        )

    first = sbatch("first").stdout.strip()
    checkpoint = run_dir / "checkpoint.pt"
    wait_for(lambda: checkpoint.exists() or job_state(first) not in {"UNKNOWN", "PENDING", "RUNNING"},
             "the first checkpoint", 120)
    subprocess.run(["scancel", first], check=True)
    wait_for(lambda: job_state(first) == "CANCELLED", f"job {first} to show as CANCELLED in sacct", 60)
    saved = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= saved < epochs and not (run_dir / "exits.csv").exists()

    # --wait: sbatch returns when the job ends, with the job's exit code.
    second = sbatch("second", "--wait")
    assert second.returncode == 0, (tmp_path / "second.err").read_text()
    err = (tmp_path / "second.err").read_text()
    resumed = re.search(r"resumed digits/resann/adaloss/seed0 after epoch (\d+)", err)
    assert resumed, err
    assert saved <= int(resumed.group(1)) < epochs  # the job may save an epoch or two after the check
    assert (run_dir / "exits.csv").exists()
    assert len((run_dir / "log.csv").read_text().splitlines()) == 1 + epochs  # header + every epoch once
    rows = sacct([first, second.stdout.strip()])
    assert [state(r) for r in rows] == ["CANCELLED", "COMPLETED"]
    print_now(capsys, f"scancel at epoch {saved}, sbatch again, resumed after epoch {resumed.group(1)}; "
                      f"{time.monotonic() - started:.0f} s\n{listing(rows)}")
