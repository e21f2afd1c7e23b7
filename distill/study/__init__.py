"""``make study``: every method compared on real data over seeds, committed as a regenerable report.

    python -m distill.study run [--study fashion_mnist digits] [--quick] [--jobs 2]
    python -m distill.study document docs/results/fashion_mnist

``plans`` says what each study runs, ``runner`` runs it through ``distill-sweep`` and ``distill-report``
and writes its results folder, ``document`` turns that folder into ``docs/results/<study>.md``.
"""
