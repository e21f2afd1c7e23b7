"""Several histograms and scalars written to TensorBoard as one event.

``SummaryWriter.add_histogram`` costs about a millisecond per call (TensorFlow's ~1,500 exponential
buckets, one event per tag). ``PerSampleStatistics`` writes 8 histograms and 10 scalars at a time;
binning all columns at once with ``np.bincount`` and sending one ``Summary`` cuts that by about 3x,
which matters for the 3% budget on small epochs. Linear buckets between each column's min and max
also read better than exponential ones for values like alpha in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

DEFAULT_BINS = 30


def histogram_protos(values: np.ndarray, bins: int = DEFAULT_BINS) -> list[HistogramProto | None]:
    """One TensorBoard histogram per column, linear buckets from the column's min to its max.

    Non-finite values are left out of a column's histogram (they stay in the raw records).

    Args:
        values: ``[N, K]`` array.
        bins: buckets per histogram.

    Returns:
        ``K`` protos (``None`` for a column without a finite value). As in TensorBoard's own
        ``make_histogram``, ``bucket_limit`` holds right edges, so an empty first bucket carries
        the left edge.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be [N, K], got shape {values.shape}")
    if not np.isfinite(values).all():
        protos: list[HistogramProto | None] = []
        for column in values.T:
            column = column[np.isfinite(column)]
            protos.append(histogram_protos(column[:, None], bins)[0] if column.size else None)
        return protos
    count, width = values.shape
    if count == 0:
        return [None] * width
    low, high = values.min(axis=0), values.max(axis=0)
    constant = high <= low
    low, high = np.where(constant, low - 0.5, low), np.where(constant, high + 0.5, high)  # as np.histogram
    step = (high - low) / bins
    bucket = np.clip(((values - low) / step).astype(np.int64), 0, bins - 1)
    counts = np.bincount((bucket + np.arange(width) * bins).ravel(), minlength=width * bins).reshape(width, bins)
    edges = low[:, None] + step[:, None] * np.arange(bins + 1)
    edges[:, -1] = high  # exact right edge despite rounding
    sums, squares = values.sum(axis=0), np.square(values).sum(axis=0)
    minima, maxima = values.min(axis=0), values.max(axis=0)
    return [
        HistogramProto(
            min=minima[k], max=maxima[k], num=count, sum=sums[k], sum_squares=squares[k],
            bucket_limit=edges[k].tolist(), bucket=[0, *counts[k].tolist()],
        )  # fmt: skip
        for k in range(width)
    ]


def build_summary(histograms: Mapping[str, np.ndarray], scalars: Mapping[str, float], bins: int = DEFAULT_BINS) -> Summary:
    """One ``Summary`` holding a histogram per ``histograms`` entry (all ``[N]``, same N) and the scalars."""
    tags = list(histograms)
    value = []
    if tags:
        table = np.stack([np.asarray(histograms[tag], dtype=np.float64) for tag in tags], axis=1)
        value += [Summary.Value(tag=tag, histo=proto) for tag, proto in zip(tags, histogram_protos(table, bins)) if proto]
    value += [Summary.Value(tag=tag, simple_value=float(number)) for tag, number in scalars.items()]
    return Summary(value=value)


def write_summary(loggers, histograms: Mapping[str, np.ndarray], scalars: Mapping[str, float], step: int,
                  bins: int = DEFAULT_BINS) -> None:  # fmt: skip
    """Histograms and scalars to every ``TensorBoardLogger`` of ``loggers`` as one event at ``step``;
    the scalars alone to every other logger (``log_metrics``). Call on global rank 0 only."""
    summary = None
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            summary = summary or build_summary(histograms, scalars, bins)
            # The same writer Lightning's own log_hyperparams uses for summaries it builds itself.
            logger.experiment._get_file_writer().add_summary(summary, step)
        else:
            logger.log_metrics(dict(scalars), step=step)
