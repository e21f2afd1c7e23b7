"""Lightning callbacks that observe a distillation run (they never change the loss).

- ``PerSampleStatistics``: per-sample sigma, T_i, alpha_i, ... as TensorBoard histograms and raw
  per-epoch record files (read them with ``callbacks.records.read_records``).
- ``TemperatureMonitor``: the policy's temperatures and own state as scalars; the HPARAMS tab.
"""

from callbacks.per_sample_statistics import PerSampleStatistics
from callbacks.records import read_epoch, read_records, record_files
from callbacks.temperature_monitor import TemperatureMonitor

__all__ = ["PerSampleStatistics", "TemperatureMonitor", "read_epoch", "read_records", "record_files"]
