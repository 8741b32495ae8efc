"""The study through a real Slurm: a one-node cluster on localhost with accounting (munged, MariaDB,
slurmdbd, slurmctld, slurmd), started by scripts/slurm/start_cluster.sh, driven by profiles/slurm.

Needs root (it starts daemons and writes /etc/slurm/slurm.conf, restored afterwards) and Debian's
slurm-wlm, slurmdbd, munge and mariadb-server, which it installs with apt-get when missing; skipped
otherwise. docs/cluster.md describes the cluster, the profile and the settings used here.
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

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "slurm"
# Jobs run `python -m snakemake` and `python -m adaloss` from this interpreter's environment.
VENV_BIN = Path(sys.executable).parent
DAEMONS = ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd")
# What the smoke study's workflow needs in its copy, beside results it makes itself.
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "profiles")
SACCT_FIELDS = ("JobID", "JobName", "Comment", "Partition", "AllocCPUS", "ReqMem", "Timelimit", "State", "Elapsed")


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


def job_state(job_id: str) -> str:
    rows = sacct([job_id])
    return rows[0]["State"].split()[0] if rows else "UNKNOWN"  # "CANCELLED by 0"; not yet in slurmdbd


def wait_for(condition, what: str, seconds: float):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.2)


def print_now(capsys, text: str) -> None:
    """Print past pytest's capture: the timings and the sacct listing are this test's report."""
    with capsys.disabled():
        print(f"\n{text}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running test cluster for this module; stopped, and /etc/slurm restored, whatever happens."""
    state = tmp_path_factory.mktemp("slurm-cluster")
    try:
        subprocess.run([SCRIPTS / "start_cluster.sh", state], check=True, timeout=900)  # apt-get included
        yield state
    finally:
        subprocess.run([SCRIPTS / "stop_cluster.sh", state], timeout=180)


def test_a_cancelled_training_job_resumes_from_its_checkpoint_when_resubmitted(cluster, tmp_path, capsys):
    """scancel mid-training, sbatch the same command again: it continues after the last epoch saved.

    The job runs in another working directory than the one it was submitted from, and every path
    it gets is absolute: what a job on a cluster node sees of a shared file system.
    """
    started = time.monotonic()
    run_dir = tmp_path / "shared" / "runs" / "digits" / "resann" / "adaloss" / "seed0"
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
    saved = torch.load(checkpoint, weights_only=False)["epoch"]
    assert 1 <= saved < epochs and not (run_dir / "exits.csv").exists()

    # --wait: sbatch returns when the job ends, with the job's exit code.
    second = sbatch("second", "--wait")
    assert second.returncode == 0, (tmp_path / "second.err").read_text()
    second_id = second.stdout.strip()
    err = (tmp_path / "second.err").read_text()
    resumed = re.search(r"resumed digits/resann/adaloss/seed0 after epoch (\d+)", err)
    assert resumed, err
    assert saved <= int(resumed.group(1)) < epochs  # the job may save an epoch or two after the check
    assert (run_dir / "exits.csv").exists()
    assert len((run_dir / "log.csv").read_text().splitlines()) == 1 + epochs  # header + every epoch once
    rows = sacct([first, second_id])
    assert [r["State"].split()[0] for r in rows] == ["CANCELLED", "COMPLETED"]
    listing = "\n".join("|".join(r.values()) for r in rows)
    print_now(capsys, f"scancel at epoch {saved}, resumed after epoch {resumed.group(1)}; "
                      f"{time.monotonic() - started:.0f} s\n{'|'.join(SACCT_FIELDS)}\n{listing}")
