"""Several histograms and scalars written to TensorBoard as one event.

``SummaryWriter.add_histogram`` costs about a millisecond per call (TensorFlow's ~1,500 exponential
buckets, one event per tag). ``PerSampleStatistics`` writes 8 histograms and 10 scalars at a time;
binning all columns at once with ``np.bincount`` and sending one ``Summary`` cuts that by about 3x,
which matters for the 3% budget on small epochs. Linear buckets between each column's min and max also
read better than exponential ones for values like alpha in [0, 1].

TensorBoard checksums every event with a pure-Python CRC-32C (about 0.17 us a byte: 0.55 ms for the
3 kB of a per-sample summary, measured). ``use_fast_crc`` swaps in google-crc32c's C implementation of
the same checksum (the bytes written are identical, tested), once, when this module is imported.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import google_crc32c
import numpy as np
import tensorboard.summary.writer.record_writer as record_writer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

DEFAULT_BINS = 20  # TensorBoard re-bins to 30 for display; fewer bytes to CRC
# Values binned in one ``column_protos`` call (512 KB of float64: each temporary stays in the caches).
BINNING_BLOCK = 65536
CRC_MASK_DELTA = 0xA282EAD8  # TFRecord's checksum masking constant


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data`` (rotate right by 15, add a constant), computed in C."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF


def use_fast_crc() -> None:
    """Make TensorBoard's event writer checksum with ``masked_crc32c`` (C) instead of its pure-Python one."""
    record_writer.masked_crc32c = masked_crc32c


use_fast_crc()


def histogram_protos(values: np.ndarray, bins: int = DEFAULT_BINS) -> list[HistogramProto | None]:
    """One TensorBoard histogram per column, linear buckets from the column's min to its max.

    Non-finite values are left out of a column's histogram (they stay in the raw records); a constant
    column gets a single bucket.

    Args:
        values: ``[N, K]`` array.
        bins: buckets per histogram.

    Returns:
        ``K`` protos (``None`` for a column without a finite value). ``bucket_limit`` holds each
        bucket's right edge; TensorBoard takes the first bucket's left edge from ``min``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be [N, K], got shape {values.shape}")
    return column_protos(np.ascontiguousarray(values.T), bins)


def column_protos(columns: np.ndarray, bins: int = DEFAULT_BINS) -> list[HistogramProto | None]:
    """``histogram_protos`` of the transposed, C-contiguous float64 ``[K, N]`` table (each histogram's values in
    one contiguous row: the reductions run along rows, and nothing is copied first)."""
    width, count = columns.shape
    if count == 0:
        return [None] * width
    # min and max propagate NaN and reach an infinity: a row is finite where both are (no pass of its own).
    low, high = columns.min(axis=1), columns.max(axis=1)
    finite = np.isfinite(low) & np.isfinite(high)
    if not finite.all():  # the rows with a non-finite value one at a time, without it; the others together
        protos: list[HistogramProto | None] = [None] * width
        for k, proto in zip(np.flatnonzero(finite).tolist(), column_protos(columns[finite], bins)):
            protos[k] = proto
        for k in np.flatnonzero(~finite).tolist():
            column = columns[k][np.isfinite(columns[k])]
            protos[k] = column_protos(column[None, :], bins)[0] if column.size else None
        return protos
    spread = high - low
    scale = np.divide(bins, spread, out=np.zeros_like(spread), where=spread > 0)  # buckets per unit; 0: constant
    # Each row gets bins + 1 slots of one bincount: slot ``bins`` takes the maximum (and any value rounding up to it),
    # folded into the last bucket after counting. The product is truncated straight into the integer array.
    bucket = np.empty(columns.shape, dtype=np.intp)
    np.multiply(columns - low[:, None], scale[:, None], out=bucket, casting="unsafe")
    bucket += (np.arange(width) * (bins + 1))[:, None]
    slots = np.bincount(bucket.ravel(), minlength=width * (bins + 1)).reshape(width, bins + 1)
    counts = slots[:, :bins]
    counts[:, -1] += slots[:, bins]
    limits = low[:, None] + (spread / bins)[:, None] * np.arange(1, bins + 1)
    limits[:, -1] = high  # exact right edge despite rounding
    sums, squares = columns.sum(axis=1), np.einsum("kn,kn->k", columns, columns)
    low, high, sums, squares, limits, counts = (array.tolist() for array in (low, high, sums, squares, limits, counts))
    protos = []
    for k in range(width):
        constant = high[k] <= low[k]
        protos.append(
            HistogramProto(
                min=low[k], max=high[k], num=count, sum=sums[k], sum_squares=squares[k],
                bucket_limit=[high[k]] if constant else limits[k], bucket=[count] if constant else counts[k],
            )  # fmt: skip
        )
    return protos


# One summary's parts: ``(histograms {tag: [N] array}, scalars {tag: float}, mean_tags)`` (see ``build_summaries``).
SummaryParts = tuple[Mapping[str, np.ndarray], Mapping[str, float], Collection[str]]


def build_summaries(parts: Sequence[SummaryParts], bins: int = DEFAULT_BINS) -> list[Summary]:
    """One ``Summary`` per ``(histograms, scalars, mean_tags)``: a histogram per ``histograms`` entry, the scalars,
    and for each tag of ``mean_tags`` the scalar ``<tag>_mean``, the mean of the histogram's finite values read off
    its proto (``sum / num``, float64) instead of a second pass over them.

    The histograms of every summary are binned together, one ``column_protos`` call for all those of one length
    (each still binned on its own: its own min, max and buckets). A hand-off builds a few hundred summaries; in a
    training run each ``column_protos`` call cost 270-320 us of process CPU against 120 us in a loop of its own
    (measured on a digits run's events), so calls, not values, are what a hand-off pays for. Up to ``BINNING_BLOCK``
    values go into one call: a hand-off of 60 digits epochs binned as one [480, 1437] table cost 0.34-0.60 ms an epoch
    of process CPU the first time (fresh memory for every temporary), in blocks of 64 K values 0.14 ms (measured).
    """
    by_length: dict[int, list[tuple[int, str]]] = {}  # length -> (summary, tag) of every histogram that long
    for position, (histograms, _, _) in enumerate(parts):
        for tag, values in histograms.items():
            by_length.setdefault(len(values), []).append((position, tag))
    protos: dict[tuple[int, str], HistogramProto | None] = {}
    for length, keys in by_length.items():
        rows = max(1, BINNING_BLOCK // max(length, 1))
        for first in range(0, len(keys), rows):
            block = keys[first : first + rows]
            table = np.stack([parts[position][0][tag] for position, tag in block], dtype=np.float64)  # [K, N]
            protos.update(zip(block, column_protos(table, bins)))
    summaries = []
    for position, (histograms, scalars, mean_tags) in enumerate(parts):
        summary, means = Summary(), {}
        add = summary.value.add  # in place: half the time of Summary(value=[Summary.Value(...), ...]) (measured)
        for tag in histograms:
            proto = protos[position, tag]
            if proto is not None:
                add(tag=tag, histo=proto)
                if tag in mean_tags:
                    means[f"{tag}_mean"] = proto.sum / proto.num
        for tag, number in {**means, **scalars}.items():
            add(tag=tag, simple_value=float(number))
        summaries.append(summary)
    return summaries


def build_summary(
    histograms: Mapping[str, np.ndarray],
    scalars: Mapping[str, float],
    bins: int = DEFAULT_BINS,
    mean_tags: Collection[str] = (),
) -> Summary:
    """One ``Summary`` holding a histogram per ``histograms`` entry (each ``[N]``), the scalars, and the means of the
    ``mean_tags`` histograms: ``build_summaries`` of one summary."""
    return build_summaries([(histograms, scalars, mean_tags)], bins)[0]


def finite_means(histograms: Mapping[str, np.ndarray], mean_tags: Collection[str]) -> dict[str, float]:
    """``{"<tag>_mean": mean of the finite values}`` for each tag of ``mean_tags`` with a finite value: the scalars
    ``build_summary`` reads off its protos, for loggers that get no histogram."""
    means = {}
    for tag in mean_tags:
        values = np.asarray(histograms[tag], dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size:
            means[f"{tag}_mean"] = float(finite.sum() / finite.size)
    return means


def write_summary(
    loggers,
    histograms: Mapping[str, np.ndarray],
    scalars: Mapping[str, float],
    step: int,
    bins: int = DEFAULT_BINS,
    mean_tags: Collection[str] = (),
) -> None:
    """Histograms and scalars (and the means of the ``mean_tags`` histograms, see ``build_summaries``) to every
    ``TensorBoardLogger`` of ``loggers`` as one event at ``step``; the scalars and means alone to every other logger
    (``log_metrics``). Call on global rank 0 only."""
    write_summaries(loggers, [(step, (histograms, scalars, mean_tags))], bins)


def write_summaries(loggers, events: Sequence[tuple[int, SummaryParts]], bins: int = DEFAULT_BINS) -> None:
    """``write_summary`` of each ``(step, (histograms, scalars, mean_tags))``, in order, their histograms binned
    together (``build_summaries``). Call on global rank 0 only."""
    summaries = None
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            summaries = summaries or build_summaries([parts for _, parts in events], bins)
            # The same writer Lightning's own log_hyperparams uses for summaries it builds itself.
            writer = logger.experiment._get_file_writer()
            for (step, _), summary in zip(events, summaries):
                writer.add_summary(summary, step)
        else:
            for step, (histograms, scalars, mean_tags) in events:
                logger.log_metrics({**finite_means(histograms, mean_tags), **scalars}, step=step)
