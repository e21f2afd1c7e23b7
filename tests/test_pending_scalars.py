"""``PendingScalars``: deferred statistics worked out at the hand-off (checked against float64 references), the
events of one step written as one TensorBoard event, and the record file's hand-written ``.npy`` bytes."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from callbacks.records import RECORD_COLUMNS, read_epoch, record_header, record_path, write_records
from distill.pending_scalars import BatchRanges, PendingScalars, as_floats, resolve
from distill.tensorboard_summary import build_summaries, build_summary, column_protos, histogram_protos


def _reference(rows: list[np.ndarray], names: list[str]) -> dict[str, float]:
    values = {}
    for kind, reduce in (("mean", np.mean), ("min", np.min), ("max", np.max)):
        for name, row in zip(names, rows):
            values[f"{name}_{kind}"] = float(reduce(row.astype(np.float64))) if len(row) else float("nan")
    return values


def _same(got: dict[str, float], want: dict[str, float]) -> None:
    assert list(got) == list(want)  # names and their order
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-6, nan_ok=True), name


def test_batch_ranges_match_a_float64_reference_across_batch_sizes_and_dtypes():
    generator = torch.Generator().manual_seed(0)
    events, references = [], []
    for size, dtype in ((64, torch.float32), (3, torch.float32), (17, torch.bfloat16), (1, torch.float64)):
        teacher = (torch.rand(size, generator=generator) * 1e4).to(dtype)  # large values: a float32 mean loses digits
        student = torch.randn(size, generator=generator).to(dtype)
        extra = torch.tensor([2.5, -1.0])
        events.append(BatchRanges(("t/teacher_T", "t/student_T"), (teacher, student), ("ctkd/T", "ctkd/lambda"), extra))
        reference = _reference([teacher.double().numpy(), student.double().numpy()], ["t/teacher_T", "t/student_T"])
        references.append({**reference, "ctkd/T": 2.5, "ctkd/lambda": -1.0})
    for got, want in zip(resolve(events), references):  # all worked out together
        _same(got, want)
    _same(as_floats(events[1]), references[1])  # and alone


def test_batch_ranges_edge_cases_nan_and_empty_rows():
    with_nan = torch.tensor([1.0, float("nan"), 3.0])
    empty = torch.empty(0)
    huge = torch.tensor([3.0e38, 3.0e38])  # a float32 sum would overflow; the float64 mean does not
    (values,) = resolve([BatchRanges(("a", "b", "c"), (with_nan, empty, huge))])
    assert all(np.isnan(values[f"a_{kind}"]) for kind in ("mean", "min", "max"))  # NaN propagates, as torch's does
    assert all(np.isnan(values[f"b_{kind}"]) for kind in ("mean", "min", "max"))
    assert values["c_mean"] == pytest.approx(3.0e38, rel=1e-6) and values["c_max"] == pytest.approx(3.0e38, rel=1e-6)
    with pytest.raises(ValueError, match="names"):
        BatchRanges(("a",), (with_nan, huge))
    with pytest.raises(ValueError, match="extra"):
        BatchRanges(("a",), (with_nan,), ("x",), None)


def test_mixed_events_resolve_in_order():
    events = [
        {"train/loss": 1.5},
        (("x", "y"), torch.tensor([1.0, 2.0])),
        BatchRanges(("r",), (torch.tensor([1.0, 3.0]),)),
        (("z",), torch.tensor([[4.0]])),
    ]
    assert resolve(events) == [{"train/loss": 1.5}, {"x": 1.0, "y": 2.0}, {"r_mean": 2.0, "r_min": 1.0, "r_max": 3.0}, {"z": 4.0}]


def test_events_of_one_step_become_one_tensorboard_event(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader  # the events as written

    logger = TensorBoardLogger(tmp_path, name="run", version=0, default_hp_metric=False)
    pending = PendingScalars(max_delay_s=1e9)
    window = np.linspace(0.0, 1.0, 10)
    epoch = np.linspace(0.0, 2.0, 30)
    pending.add({"train/loss": 2.0}, 4, [logger])
    pending.add(BatchRanges(("temperature/teacher_T",), (torch.tensor([1.0, 3.0]),)), 4, [logger])
    pending.add({"per_sample/sigma_mean": 0.5}, 4, [logger], histograms={"per_sample/sigma": window})
    pending.add({"per_sample_epoch/sigma_mean": 1.0}, 4, [logger], histograms={"per_sample_epoch/sigma": epoch})
    pending.add({"train/loss": 1.0}, 9, [logger])
    pending.write([logger])
    assert pending.events == []
    logger.experiment.flush()
    (event_file,) = [os.path.join(logger.log_dir, name) for name in os.listdir(logger.log_dir)]
    written = [event for event in LegacyEventFileLoader(event_file).Load() if event.HasField("summary")]
    assert [event.step for event in written] == [4, 9]
    tags = {value.tag: value for value in written[0].summary.value}
    assert set(tags) == {
        "train/loss", "temperature/teacher_T_mean", "temperature/teacher_T_min", "temperature/teacher_T_max",
        "per_sample/sigma_mean", "per_sample/sigma", "per_sample_epoch/sigma_mean", "per_sample_epoch/sigma",
    }  # fmt: skip
    assert tags["temperature/teacher_T_mean"].simple_value == 2.0
    # Histograms of different lengths in one event: each binned on its own.
    assert tags["per_sample/sigma"].histo.num == 10 and tags["per_sample_epoch/sigma"].histo.num == 30
    assert tags["per_sample_epoch/sigma"].histo == histogram_protos(epoch[:, None])[0]


def test_build_summary_histograms_of_different_lengths_equal_their_own():
    first, second = np.arange(5.0), np.r_[np.arange(7.0), np.nan]
    summary = build_summary({"a": first, "b": second}, {"c": 1.0})
    values = {value.tag: value for value in summary.value}
    assert values["a"].histo == histogram_protos(first[:, None])[0]
    assert values["b"].histo == histogram_protos(second[:, None])[0]
    assert values["c"].simple_value == 1.0


def test_summaries_binned_together_equal_each_histogram_binned_alone():
    """A hand-off bins the histograms of all its summaries together (one table per length): every histogram must
    still be its own, with its own range, and its mean that of its finite values (float64, from numpy)."""
    rng = np.random.default_rng(3)
    parts = []
    for position in range(12):
        histograms = {}
        for tag in ("sigma", "alpha", "kd"):
            scale = 10.0 ** rng.integers(-3, 4)
            values = (rng.standard_normal(int(rng.choice([0, 1, 7, 64]))) * scale).astype(np.float32)
            if len(values) > 1 and rng.random() < 0.3:
                values[rng.integers(len(values))] = rng.choice([np.nan, np.inf, -np.inf])
            if rng.random() < 0.2:
                values[:] = 2.5  # constant: one bucket
            histograms[f"group{position % 3}/{tag}"] = values
        mean_tags = [tag for tag in histograms if "kd" not in tag]
        parts.append((histograms, {f"scalar{position}": float(position)}, mean_tags))
    for (histograms, scalars, mean_tags), summary in zip(parts, build_summaries(parts)):
        values = {value.tag: value for value in summary.value}
        for tag, column in histograms.items():
            finite = column[np.isfinite(column)].astype(np.float64)
            if not finite.size:
                assert tag not in values and f"{tag}_mean" not in values
                continue
            assert values[tag].histo == histogram_protos(column[:, None])[0]
            histo = values[tag].histo
            assert (histo.num, histo.min, histo.max) == (finite.size, finite.min(), finite.max())
            assert sum(histo.bucket) == finite.size
            assert histo.sum == pytest.approx(finite.sum(), rel=1e-12, abs=1e-300)
            if tag in mean_tags:
                assert values[f"{tag}_mean"].simple_value == pytest.approx(finite.mean(), rel=1e-6, abs=1e-30)
            else:
                assert f"{tag}_mean" not in values
        assert values[next(iter(scalars))].simple_value == next(iter(scalars.values()))
    assert build_summaries([]) == []


def test_column_protos_of_rows_with_and_without_non_finite_values_equal_each_row_alone():
    rng = np.random.default_rng(5)
    table = rng.standard_normal((6, 50))
    table[1, 3], table[4, 0], table[5, :] = np.nan, -np.inf, np.nan
    protos = column_protos(table)
    assert protos[5] is None
    for row, proto in zip(table[:5], protos[:5]):
        finite = row[np.isfinite(row)]
        assert proto == column_protos(np.ascontiguousarray(finite[None, :]))[0]
        assert (proto.num, proto.min, proto.max) == (finite.size, finite.min(), finite.max())


def test_column_protos_count_every_value_in_the_bucket_of_its_definition():
    """Against a per-value float64 reference: bucket floor((x - min) * bins / (max - min)), the maximum in the last
    bucket; float32 values as the per-sample columns hold them, a row of huge values, ties at the extremes."""
    rng = np.random.default_rng(11)
    bins = 20
    table = np.stack([
        rng.standard_normal(997), rng.uniform(0, 1, 997) ** 4, rng.uniform(-3e38, 3e38, 997),
        np.repeat(np.arange(-3.0, 4.0), [300, 1, 1, 1, 1, 1, 692]),  # ties at both ends
    ]).astype(np.float32).astype(np.float64)  # fmt: skip
    for row, proto in zip(table, column_protos(table, bins)):
        low, high = float(row.min()), float(row.max())
        scale = bins / (high - low)
        reference = [0] * bins
        for value in row.tolist():
            reference[min(int((value - low) * scale), bins - 1)] += 1
        assert list(proto.bucket) == reference
        assert (proto.num, proto.min, proto.max, proto.bucket_limit[-1]) == (row.size, low, high, high)
        assert proto.sum == pytest.approx(math.fsum(row.tolist()), rel=1e-12)


def test_records_file_is_byte_identical_to_np_save(tmp_path):
    columns = {name: (np.arange(37) % 5).astype(dtype) for name, dtype in RECORD_COLUMNS.items()}
    path = record_path(tmp_path / "not yet there", 2)  # the folder is created
    stale = path.parent / f".{path.name}.{os.getpid()}.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over from a crash" * 1000)  # a longer stale temporary is truncated, not appended to
    write_records(path, columns)
    table = np.empty(37, dtype=np.dtype(list(RECORD_COLUMNS.items())))
    for name in RECORD_COLUMNS:
        table[name] = columns[name]
    expected = io.BytesIO()
    np.save(expected, table, allow_pickle=False)
    assert path.read_bytes() == expected.getvalue()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert {name: column.tolist() for name, column in read_epoch(path).items()} == {
        name: column.tolist() for name, column in columns.items()
    }


def test_records_header_cached_by_row_count_is_np_saves_for_every_count(tmp_path):
    # Counts in an order that revisits cached ones; 0 rows, and counts whose shape has more digits.
    for epoch, rows in enumerate([37, 0, 1, 37, 10**6 + 3, 1, 12345678901]):
        expected = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            expected, {"descr": np.lib.format.dtype_to_descr(np.dtype(list(RECORD_COLUMNS.items()))),
                       "fortran_order": False, "shape": (rows,)})  # fmt: skip
        assert record_header(rows) == expected.getvalue(), rows
        if rows < 100:  # whole files for the small counts
            columns = {name: (np.arange(rows) % 3).astype(dtype) for name, dtype in RECORD_COLUMNS.items()}
            path = write_records(record_path(tmp_path, epoch), columns)
            table = np.zeros(rows, dtype=np.dtype(list(RECORD_COLUMNS.items())))
            for name in RECORD_COLUMNS:
                table[name] = columns[name]
            saved = io.BytesIO()
            np.save(saved, table, allow_pickle=False)
            assert path.read_bytes() == saved.getvalue(), rows


def test_histogram_means_read_off_the_protos_equal_the_finite_means():
    from distill.tensorboard_summary import finite_means

    histograms = {"a": np.r_[np.arange(10.0), np.nan, np.inf], "b": np.full(4, np.nan), "c": np.array([1e30, 3e30], np.float32)}
    summary = build_summary(histograms, {"d": 2.0}, mean_tags=("a", "b", "c"))
    scalars = {value.tag: value.simple_value for value in summary.value if value.WhichOneof("value") == "simple_value"}
    expected = finite_means(histograms, ("a", "b", "c"))
    assert set(expected) == {"a_mean", "c_mean"}  # no finite value: no mean
    assert expected["a_mean"] == 4.5 and expected["c_mean"] == pytest.approx(2e30, rel=1e-6)
    assert set(scalars) == {"a_mean", "c_mean", "d"}
    for tag, value in expected.items():
        assert scalars[tag] == pytest.approx(value, rel=1e-6)
