"""``distill-sweep``: many ordinary ``distill fit`` runs in one restartable sweep folder.

- ``definition``: what a sweep is (config layers x ``--set`` lists x a grid's temperatures x seeds).
- ``folder``: the sweep folder's layout and its ``sweep.yaml``.
- ``point``: one point's override config, ``distill fit`` command and state (new, interrupted, finished).
- ``execute``: running points one after another or K at a time, each under a lock.
- ``slurm``: the generated ``sbatch --array`` script.
- ``command``: the command line (``main``).
"""


def main(argv: list[str] | None = None) -> int:
    """The ``distill-sweep`` command (imported on call: ``distill.sweep.folder`` stays light for the report)."""
    from distill.sweep.command import main as sweep_main

    return sweep_main(argv)
