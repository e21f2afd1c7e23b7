"""The sweep as a SLURM job array: a generated ``sbatch`` script, one array task per unfinished point.

Task ``i`` runs ``distill-sweep --resume <sweep> --task i`` (point ``i`` = line ``i`` of
``commands.txt``) through ``srun``: the same skip / resume / lock logic as a local sweep, so a
requeued or resubmitted task skips a finished point and resumes an interrupted one from its newest
checkpoint (``checkpoints/last.ckpt`` after a SIGUSR1 before the time limit: the run's ``Preemption``
callback saves it and requeues the task, ``distill/preemption.py``; Lightning's own auto-requeue is off).
The task that finds every point finished writes the report. Nothing here needs a cluster until ``submit``.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from distill.errors import DistillError

SCRIPT_FILE = "sweep.sbatch"
OUTPUT_DIR = "slurm"


def array_spec(indices: Sequence[int], max_running: int | None = None) -> str:
    """``[1, 2, 3, 5, 7, 8]`` -> ``"1-3,5,7-8"`` (``%K`` appended: at most K tasks at a time)."""
    ranges: list[list[int]] = []
    for index in sorted(indices):
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    spec = ",".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)
    return f"{spec}%{max_running}" if max_running else spec


def sbatch_script(
    sweep_dir: Path, name: str, tasks: Sequence[int], sweep_command: Sequence[str], cwd: str,
    options: Sequence[str] = (), max_running: int | None = None,
) -> str:  # fmt: skip
    """The text of the array script for the points ``tasks`` (1-based indices) of the sweep in ``sweep_dir``.

    ``options`` become extra ``#SBATCH`` lines (partition, time, GPUs, ...); options given to ``sbatch``
    on its command line override every ``#SBATCH`` line.
    """
    task_command = shlex.join([*sweep_command, "--resume", str(sweep_dir), "--task"]) + ' "$SLURM_ARRAY_TASK_ID"'
    lines = [
        "#!/bin/bash",
        f"# distill-sweep {name}: one array task per unfinished point; task i runs point i (line i of",
        f"# {sweep_dir / 'commands.txt'}): a finished point is skipped, an interrupted one resumes from",
        "# its newest checkpoint. The task that finds every point finished writes results.md.",
        f"# Submit what is left again with: distill-sweep --resume {sweep_dir} --launcher slurm",
        f"#SBATCH --job-name={shlex.quote('distill-sweep-' + name)}",
        f"#SBATCH --array={array_spec(tasks, max_running)}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --output={sweep_dir / OUTPUT_DIR}/%A_%a.out",
        # 90 s before the limit: SIGUSR1, on which the run's Preemption callback saves checkpoints/last.ckpt,
        # runs `scontrol requeue` for this task and exits (distill/preemption.py).
        "#SBATCH --signal=SIGUSR1@90",
        "#SBATCH --requeue",
        *(f"#SBATCH {option}" for option in options),
        "set -euo pipefail",
        f"cd {shlex.quote(cwd)}",
        # "$@": arguments given to the script go to the task, e.g. `bash sweep.sbatch --dry_run`.
        f'srun --ntasks=1 {task_command} "$@"',
    ]
    return "\n".join(lines) + "\n"


def write_script(sweep_dir: Path, text: str) -> Path:
    """Write the script (and the folder its tasks' output goes to); return its path."""
    (sweep_dir / OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
    path = sweep_dir / SCRIPT_FILE
    path.write_text(text)
    path.chmod(0o755)
    return path


def submit(script: Path) -> str:
    """``sbatch --parsable <script>``; returns the job id."""
    if shutil.which("sbatch") is None:
        raise DistillError(
            f"sbatch not found on PATH: run distill-sweep on the cluster's login node, or add --dry_run to only "
            f"write {script}"
        )
    result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        message = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
        raise DistillError(f"sbatch {script} failed: {message}")
    return result.stdout.strip().split(";")[0]
