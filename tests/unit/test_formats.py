"""Binary formats (issue 20): Arrow IPC, Protobuf and Avro as decoders and sink encoders.

Every column dtype of a schema goes encode -> decode -> coerce and comes back equal (pandas'
own comparison); malformed payloads become failures with a reason naming the format and what
arrived, the rest of the batch kept; the columnar coercion equals the row-by-row one.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

import rtnb
import rtnb.formats
from rtnb._formats import Columns
from rtnb.sources._coerce import coerce
from rtnb.sources._decode import make_decoder
from rtnb.sources._runner import convert

EXAMPLE = pd.DataFrame({
    "t": pd.Series([], dtype="datetime64[ns, UTC]"),
    "n": pd.Series([], dtype="int64"),
    "x": pd.Series([], dtype="float64"),
    "ok": pd.Series([], dtype=bool),
    "s": pd.Series([], dtype="str"),
    "k": pd.Series([], dtype=pd.CategoricalDtype(["web-1", "db-2", "cache"])),
    "m": pd.Series([], dtype="Int64"),
})


def rows(n: int = 7) -> pd.DataFrame:
    """Every dtype of EXAMPLE, with nanosecond times, big ints, NaN, missing ints and text."""
    rng = np.random.default_rng(20)
    base = 1_767_225_600_000_000_000
    return pd.DataFrame({
        "t": pd.to_datetime(base + np.arange(n) * 1_000_000_007, utc=True).as_unit("ns"),
        "n": np.array([2**62, -(2**62), *range(n - 2)], dtype="int64")[:n],
        "x": np.where(np.arange(n) % 3 == 1, np.nan, rng.normal(size=n)),
        "ok": np.arange(n) % 2 == 0,
        "s": pd.Series([None if i % 4 == 3 else f"é-{i}" for i in range(n)], dtype="str"),
        "k": pd.Categorical([["web-1", "db-2", "cache"][i % 3] for i in range(n)],
                            categories=["web-1", "db-2", "cache"]),
        "m": pd.array([None if i % 2 else i * 10**15 for i in range(n)], dtype="Int64"),
    })


def row_class(drop: str | None = None, name: str = "Row") -> type:
    """A generated message class for EXAMPLE, built without protoc (descriptor in Python)."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"rtnb_test_{name}.proto", package="rtnbtest", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"])
    message = proto.message_type.add(name=name)
    types = {"t": field.TYPE_MESSAGE, "n": field.TYPE_INT64, "x": field.TYPE_DOUBLE,
             "ok": field.TYPE_BOOL, "s": field.TYPE_STRING, "k": field.TYPE_STRING,
             "m": field.TYPE_INT64}
    for number, (col, kind) in enumerate(types.items(), 1):
        if col == drop:
            continue
        f = message.field.add(name=col, number=number, type=kind)
        if col == "t":
            f.type_name = ".google.protobuf.Timestamp"
        if col in ("s", "m"):  # may be missing: proto3 `optional`
            f.proto3_optional = True
            f.oneof_index = len(message.oneof_decl)
            message.oneof_decl.add(name=f"_{col}")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    cls: type = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"rtnbtest.{name}"))
    return cls


ROW = row_class()
SCHEMA = rtnb.formats.schema_of(EXAMPLE, "Sample")
FORMATS = {
    "arrow": lambda: rtnb.formats.arrow(),
    "avro-container": lambda: rtnb.formats.avro(),
    "avro-schemaless": lambda: rtnb.formats.avro(SCHEMA),
    "protobuf": lambda: rtnb.formats.protobuf(ROW),
}


def decoded(fmt: object, payloads: list[bytes]) -> tuple[pd.DataFrame, list[int], list]:
    """What a source does with a batch: decode and coerce; the good rows, the payload of
    each, ``(payload, reason)`` of each dead letter."""
    return convert(make_decoder(fmt, EXAMPLE), EXAMPLE, "s", payloads)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", FORMATS)
def test_every_dtype_round_trips_exactly(name: str) -> None:
    """encode -> decode -> coerce gives back the frame: ns times in UTC, 2**62, NaN, <NA>,
    missing text, categories."""
    fmt = FORMATS[name]()
    expected = rows()
    payloads = make_decoder(fmt, EXAMPLE).encode(expected)  # type: ignore[union-attr]
    assert len(payloads) == (len(expected) if fmt.per_row else 1)
    result, owners, failed = decoded(fmt, payloads)
    tm.assert_frame_equal(result, expected)
    assert failed == []
    # the columnar coercion builds what the row-by-row one builds from the same records
    columns = make_decoder(fmt, EXAMPLE).decode_batch(payloads)[0]
    assert isinstance(columns, Columns)
    tm.assert_frame_equal(coerce(columns.records(), EXAMPLE)[0], expected)
    assert owners == (list(range(len(expected))) if fmt.per_row else [0] * len(expected))


#: the other dtypes a schema may have: nullable floats and booleans with missing values,
#: tz-naive times, 32-bit ints and floats, Arrow-backed strings
MORE = pd.DataFrame({
    "t": pd.Series([], dtype="datetime64[ns]"),
    "f": pd.Series([], dtype="Float64"),
    "b": pd.Series([], dtype="boolean"),
    "i": pd.Series([], dtype="int32"),
    "g": pd.Series([], dtype="float32"),
    "p": pd.Series([], dtype="string[pyarrow]"),
})


def more_rows(n: int = 6) -> pd.DataFrame:
    base = 1_767_225_600_000_000_000
    return pd.DataFrame({
        "t": pd.to_datetime(base + np.arange(n) * 1_000_000_007).as_unit("ns"),
        "f": pd.array([None if i % 3 == 1 else i / 7 for i in range(n)], dtype="Float64"),
        "b": pd.array([None if i % 3 == 2 else i % 2 == 0 for i in range(n)], dtype="boolean"),
        "i": np.arange(n, dtype="int32") - 3,
        "g": (np.arange(n, dtype="float32") / 4).astype("float32"),
        "p": pd.array([None if i == 4 else f"p{i}" for i in range(n)], dtype="string[pyarrow]"),
    })


@pytest.mark.parametrize("name", ["arrow", "avro-container", "avro-schemaless"])
def test_nullable_narrow_and_naive_dtypes_round_trip_exactly(name: str) -> None:
    """Float64 and boolean with <NA>, tz-naive times, int32, float32, string[pyarrow]: what
    is written comes back equal (a missing Float64 value is written as null, not refused)."""
    fmt = {"arrow": rtnb.formats.arrow, "avro-container": rtnb.formats.avro,
           "avro-schemaless": lambda: rtnb.formats.avro(rtnb.formats.schema_of(MORE))}[name]()
    expected = more_rows()
    payloads = make_decoder(fmt, MORE).encode(expected)  # type: ignore[union-attr]
    result, _, failed = convert(make_decoder(fmt, MORE), MORE, "s", payloads)  # type: ignore[arg-type]
    assert failed == []
    tm.assert_frame_equal(result, expected)


def test_a_missing_float_value_is_written_as_nan_to_a_double_field_that_cannot_be_null() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": "double"}]}
    example = pd.DataFrame({"f": pd.Series([], dtype="float64")})
    fmt = make_decoder(rtnb.formats.avro(schema), example)
    payloads = fmt.encode(pd.DataFrame({"f": pd.array([1.5, None], dtype="Float64")}))  # type: ignore[union-attr]
    result, _, failed = convert(fmt, example, "s", payloads)  # type: ignore[arg-type]
    assert failed == [] and result["f"].iloc[0] == 1.5 and np.isnan(result["f"].iloc[1])


@pytest.mark.parametrize("name", FORMATS)
def test_a_batch_of_one_row_with_missing_values_is_decoded_not_dead_lettered(name: str) -> None:
    """A source's batch may hold a single message: its nullable columns are then all
    missing (``<NA>``), which the columnar coercion must take as it takes them among other
    rows (it failed on the range check of the Int64 column: ``min()`` of missing values
    only is ``<NA>``, and the message became a dead letter)."""
    data = rows(8)
    fmt = make_decoder(FORMATS[name](), EXAMPLE)
    for i in range(len(data)):
        one = data.iloc[[i]].reset_index(drop=True)
        result, _, failed = decoded(FORMATS[name](), fmt.encode(one))  # type: ignore[union-attr]
        assert failed == [], (i, failed)
        tm.assert_frame_equal(result, one)


@pytest.mark.parametrize("name", ["arrow", "avro"])
def test_the_strings_are_the_batch_formats(name: str) -> None:
    """decoder="arrow" / "avro" read what encoder="arrow" / "avro" write (sink side:
    rtnb.sinks' make_encoder); several batches in one decode keep each row's payload."""
    from rtnb.sinks._core import make_encoder

    encoder = make_encoder(name, EXAMPLE, "sink 'x'")
    data = rows(10)
    payloads = encoder.encode(data.iloc[:4]) + encoder.encode(data.iloc[4:].reset_index(drop=True))
    result, owners, failed = decoded(name, payloads)
    tm.assert_frame_equal(result, data)
    assert owners == [0] * 4 + [1] * 6 and failed == []


def payloads_of(name: str, n: int = 6) -> list[bytes]:
    """One message per row for every format (a batch format: one batch per row)."""
    fmt = make_decoder(FORMATS[name](), EXAMPLE)
    data = rows(n)
    return [p for i in range(n) for p in fmt.encode(data.iloc[[i]].reset_index(drop=True))]  # type: ignore[union-attr]


MALFORMED = {
    # name: (a payload that is bad for it, the words of its dead letter's reason)
    "arrow": (b'{"t": 1, "n": 2}', "arrow decode failed: not an Arrow IPC stream or file "
                                   "(16 bytes b'{\"t\": 1, \"n\": 2}')"),
    "avro-container": (b"PAR1....", "avro decode failed: not an Avro object container "
                                    "(8 bytes b'PAR1....'): no 'Obj\\x01' header"),
    "avro-schemaless": (b"\x02", "avro decode failed: not a record of Avro schema 'Sample' "
                                 "(1 bytes b'\\x02'): truncated"),
    "protobuf": (b"\xff\xff\xff", "protobuf decode failed: not a rtnbtest.Row message "
                                  "(3 bytes b'\\xff\\xff\\xff')"),
}


@pytest.mark.parametrize("name", FORMATS)
def test_a_malformed_payload_is_a_failure_with_a_reason_the_rest_kept(name: str) -> None:
    good = payloads_of(name)
    bad, words = MALFORMED[name]
    truncated = good[2][: len(good[2]) // 2]
    batch = [good[0], bad, good[1], truncated, good[4]]
    result, owners, failed = decoded(FORMATS[name](), batch)
    assert sorted(i for i, _ in failed) == [1, 3]
    reasons = dict(failed)
    assert reasons[1].startswith(words), reasons[1]
    if name == "protobuf":  # cut at a field boundary, a message parses: its defaults do not fit
        assert reasons[3] == "column 'k' (category): '' is not one of the column's categories"
    else:
        assert reasons[3].startswith(f"{'avro' if 'avro' in name else name} decode failed: ")
    tm.assert_frame_equal(result, rows(6).iloc[[0, 1, 4]].reset_index(drop=True))
    assert sorted(set(owners)) == [0, 2, 4]


def test_a_payload_of_another_schema_is_a_dead_letter_not_wrong_values() -> None:
    """Protobuf parses most bytes; fields the class does not define give the message away.
    An Arrow stream or an Avro container of another schema lacks the example's columns."""
    other = row_class(name="Other")
    message = other(n=5, s="x")
    message.ok = True
    alien = message.SerializeToString() + b"\xa0\x06\x01"  # field 100: not in Row
    _, _, failed = decoded(rtnb.formats.protobuf(ROW), [alien])
    assert failed == [(0, "protobuf decode failed: not a rtnbtest.Row message (10 bytes "
                          "b'\\x10\\x05 \\x01*\\x01x\\xa0\\x06\\x01'): it carries field numbers "
                          "[100] the message does not define (another message type?)")]
    wrong = pd.DataFrame({"host": ["a"], "cpu": [1.0]})
    arrow = rtnb.formats.arrow().bind(wrong).encode(wrong)
    _, _, failed = decoded("arrow", arrow)
    assert failed[0][1].startswith("arrow decode failed: the Arrow schema has no column 't', "
                                   "'n', 'x', 'ok', 's', 'k', 'm' of the example (it has "
                                   "'host', 'cpu')")
    container = rtnb.formats.avro().bind(wrong).encode(wrong)
    _, _, failed = decoded("avro", container)
    assert "the Avro schema 'Row' of this container has no field 't'" in failed[0][1]
    # a schemaless record of another schema: bytes left over, or too few
    short = rtnb.formats.avro(rtnb.formats.schema_of(wrong)).bind(wrong).encode(wrong)
    _, _, failed = decoded(rtnb.formats.avro(SCHEMA), short)
    assert failed[0][1].startswith("avro decode failed: not a record of Avro schema 'Sample'")


def test_values_that_do_not_fit_take_the_row_by_row_path_with_its_reasons() -> None:
    """The columnar coercion refuses exactly what the general one refuses, with its words."""
    frame = rows(4).astype({"k": object, "m": "float64"})
    frame.loc[1, "k"] = "nope"
    frame.loc[2, "m"] = 0.5
    cols = Columns(frame)
    result = coerce(cols, EXAMPLE)
    expected = coerce(cols.records(), EXAMPLE)
    tm.assert_frame_equal(result[0], expected[0])
    assert result[1].tolist() == [False, True, True, False]
    assert result[2] == expected[2] == [
        "column 'k' (category): 'nope' is not one of the column's categories",
        "column 'm' (Int64): 0.5 is not an integer"]


def test_a_missing_value_in_a_nullable_int_column_is_kept_in_every_format() -> None:
    """JSON too: ``null`` in an Int64 (or boolean) column is <NA>, not a bad row; a numpy
    int64 column still refuses it."""
    ex = pd.DataFrame({"m": pd.Series([], dtype="Int64"), "b": pd.Series([], dtype="boolean"),
                       "n": pd.Series([], dtype="int64")})
    good, _, reasons = coerce([{"m": None, "b": None, "n": 1}, {"m": 2, "b": True, "n": None}],
                                ex)
    expected = pd.DataFrame({"m": pd.array([None], dtype="Int64"),
                             "b": pd.array([None], dtype="boolean"), "n": [1]})
    tm.assert_frame_equal(good, expected)
    assert reasons == ["column 'n' (int64): missing"]


def test_schemas_that_cannot_hold_the_example_are_refused_when_built() -> None:
    with pytest.raises(rtnb.ConfigError, match="the message has no field 'x' for the example"):
        make_decoder(rtnb.formats.protobuf(row_class(drop="x", name="NoX")), EXAMPLE)
    with pytest.raises(rtnb.ConfigError, match="the schema 'Sample' has no field 'zz'"):
        make_decoder(rtnb.formats.avro(SCHEMA), EXAMPLE.assign(zz=pd.Series([], dtype=float)))
    with pytest.raises(rtnb.ConfigError, match="needs a generated message class"):
        rtnb.formats.protobuf(dict)
    with pytest.raises(rtnb.ConfigError, match="not an Avro schema"):
        rtnb.formats.avro({"type": "record", "name": "R", "fields": [{"name": "a"}]})
    with pytest.raises(rtnb.ConfigError, match="`time_unit` must be one of"):
        rtnb.formats.avro(SCHEMA, time_unit="h")  # type: ignore[arg-type]
    with pytest.raises(rtnb.ConfigError, match="decoder must be 'json', 'msgpack', 'csv', "
                                               "'arrow', 'avro'"):
        make_decoder("protobuf", EXAMPLE)
    sdf = rtnb.StreamingFrame(EXAMPLE, name="cpu")
    with pytest.raises(rtnb.ConfigError, match=r"redis sink 'cpu\.redis': `encoder` must be"):
        rtnb.sinks.to_redis_stream(sdf, "s", encoder="xml")
    with pytest.raises(rtnb.ConfigError, match=r"kafka sink 'cpu\.kafka': protobuf format of "
                                               r"rtnbtest\.NoN: the message has no field 'n'"):
        rtnb.sinks.to_kafka(sdf, "t", encoder=rtnb.formats.protobuf(row_class("n", "NoN")))


def test_protobuf_refuses_a_missing_value_its_field_cannot_hold() -> None:
    fmt = make_decoder(rtnb.formats.protobuf(ROW), EXAMPLE)
    data = rows(2).astype({"x": "float64"})
    data["k"] = data["k"].cat.add_categories([]).astype(object)
    data.loc[0, "k"] = None
    with pytest.raises(ValueError, match="column 'k' has a missing value, which field 'k' "
                                         "cannot hold"):
        fmt.encode(data.astype({"k": EXAMPLE["k"].dtype}))  # type: ignore[union-attr]


def test_integer_times_use_the_formats_time_unit_both_ways() -> None:
    ex = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns]")})
    schema = {"type": "record", "name": "T", "fields": [{"name": "t", "type": "long"}]}
    fmt = make_decoder(rtnb.formats.avro(schema, time_unit="ms"), ex)
    data = pd.DataFrame({"t": pd.to_datetime(["2026-01-01T00:00:00.123"]).as_unit("ns")})
    (payload,) = fmt.encode(data)  # type: ignore[union-attr]
    assert rtnb.formats.avro(schema).bind(ex)._fastavro.schemaless_reader(
        __import__("io").BytesIO(payload), schema) == {"t": 1_767_225_600_123}
    records, _, _ = fmt.decode_batch([payload])
    tm.assert_frame_equal(coerce(records, ex)[0], data)


def test_batch_formats_make_one_message_per_key_or_partition() -> None:
    """Arrow / an Avro container per group of rows (Kafka key, Redis partition), each with
    an id of its rows: the same rows give the same id."""
    sdf = rtnb.StreamingFrame(EXAMPLE, name="cpu")
    sink = rtnb.sinks.to_redis_stream(sdf, "s", encoder="arrow")
    data = rows(6)
    messages = sink.messages(data, by=data["k"].astype(str).tolist())
    assert [m.first for m in messages] == [0, 1, 2]
    again = sink.messages(data, by=data["k"].astype(str).tolist())
    assert [m.id for m in messages] == [m.id for m in again]
    assert len({m.id for m in messages}) == 3 and messages[0].id.startswith("cpu:")
    parts = [decoded("arrow", [m.payload])[0] for m in messages]
    tm.assert_frame_equal(pd.concat(parts).sort_values("t", ignore_index=True), data)
    per_row = rtnb.sinks.to_redis_stream(sdf, "s", encoder=rtnb.formats.protobuf(ROW),
                                         name="pb")
    assert [m.id for m in per_row.messages(data)] == per_row.row_ids(data)


def test_a_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastavro", None)
    with pytest.raises(rtnb.MissingExtraError, match=r"needs fastavro: pip install "
                                                     r"'rtnb\[formats\]'"):
        rtnb.formats.avro()


def test_an_exported_script_builds_the_same_formats(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The format constructors are recorded: the script calls them again (a Protobuf class
    by its import path, so the script imports it)."""
    from google.protobuf.duration_pb2 import Duration

    ex = pd.DataFrame({"seconds": pd.Series([], dtype="int64"),
                       "nanos": pd.Series([], dtype="int64")})
    src = rtnb.sources.redis_stream("in", example=ex, decoder=rtnb.formats.protobuf(Duration),
                                    name="durations")
    rtnb.sinks.to_redis_stream(src, "out", encoder=rtnb.formats.avro(), name="copy")
    rtnb.sinks.to_nats(src, "out", encoder="arrow", name="to_nats")
    code = rtnb.Pipeline(src).export(tmp_path / "job.py").read_text()
    compile(code, "job.py", "exec")
    assert "decoder=rtnb.formats.protobuf('google.protobuf.duration_pb2.Duration')" in code
    assert "encoder=rtnb.formats.avro()" in code
    assert "encoder='arrow'" in code
    fmt = rtnb.formats.protobuf("google.protobuf.duration_pb2.Duration")
    assert fmt.message is Duration


@pytest.mark.parametrize("make", [lambda: "arrow", lambda: "avro",
                                  lambda: rtnb.formats.avro(SCHEMA),
                                  lambda: rtnb.formats.protobuf(
                                      "google.protobuf.timestamp_pb2.Timestamp")])
def test_a_bound_format_pickles_for_a_dask_worker(make) -> None:  # type: ignore[no-untyped-def]
    """A source's decoder travels to the workers of a cluster run (PartitionDecoder)."""
    import pickle

    ex = EXAMPLE if not isinstance(make(), rtnb.formats.ProtobufFormat) else \
        pd.DataFrame({"seconds": pd.Series([], dtype="int64")})
    data = rows(3)[list(ex.columns)] if "t" in ex.columns else \
        pd.DataFrame({"seconds": [1, 2, 3]})
    fmt = make_decoder(make(), ex)
    copy = pickle.loads(pickle.dumps(fmt))
    payloads = fmt.encode(data)  # type: ignore[union-attr]
    records, _, failed = copy.decode_batch(payloads)
    tm.assert_frame_equal(coerce(records, ex)[0], data)
    assert failed == []


@pytest.mark.parametrize("name", FORMATS)
def test_a_batch_of_only_bad_payloads_gives_no_rows_of_the_schema(name: str) -> None:
    good, owners, failed = decoded(FORMATS[name](), [b"\x00garbage\xff", b"\x07"])
    tm.assert_frame_equal(good, EXAMPLE.iloc[:0].reset_index(drop=True))
    assert owners == [] and [i for i, _ in failed] == [0, 1]


def test_a_bad_schemaless_avro_record_costs_no_frame_per_record() -> None:
    """One bad record among many: the others are still read into one frame (the fallback
    once built a DataFrame per record: 10 s for 1,000 records on a loaded machine)."""
    fmt = make_decoder(rtnb.formats.avro(SCHEMA), EXAMPLE)
    payloads = fmt.encode(rows(400))  # type: ignore[union-attr]
    good, owners, failed = decoded(fmt, [*payloads[:200], b"\x00garbage\xff", *payloads[200:]])
    tm.assert_frame_equal(good, rows(400))
    assert [i for i, _ in failed] == [200] and owners == [*range(200), *range(201, 401)]


def test_avro_date_time_and_uuid_logical_types_read_as_their_primitives() -> None:
    """Records of a producer's schema with ``date``, ``time-millis`` and ``uuid`` fields
    (fastavro writes them from Python objects): read into the frame as days since the
    epoch, milliseconds since midnight and text, not turned into dead letters."""
    import datetime
    import io
    import uuid

    import fastavro

    schema = {"type": "record", "name": "Ev", "fields": [
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "v", "type": "double"}]}
    ids = [uuid.UUID(int=i) for i in range(3)]
    records = [{"day": datetime.date(2026, 1, 1 + i), "at": datetime.time(0, 0, i),
                "id": ids[i], "v": i / 2} for i in range(3)]
    payloads = []
    for record in records:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
        payloads.append(buffer.getvalue())
    example = pd.DataFrame({"day": pd.Series([], dtype="int64"),
                            "at": pd.Series([], dtype="int64"),
                            "id": pd.Series([], dtype="str"), "v": pd.Series([], dtype=float)})
    good, owners, failed = convert(make_decoder(rtnb.formats.avro(schema), example), example,
                                   "s", payloads)
    assert failed == [] and owners == [0, 1, 2]
    epoch_day = (datetime.date(2026, 1, 1) - datetime.date(1970, 1, 1)).days
    tm.assert_frame_equal(good, pd.DataFrame({
        "day": np.arange(3, dtype=np.int64) + epoch_day,
        "at": np.arange(3, dtype=np.int64) * 1000,
        "id": pd.Series([str(u) for u in ids], dtype="str"), "v": [0.0, 0.5, 1.0]}))


def test_avro_values_no_column_holds_are_dead_letters_not_a_failed_source() -> None:
    """A producer's ``decimal`` field read into a float column: fastavro gives
    ``decimal.Decimal`` objects that the frame cannot take; the records become dead letters
    with the reason (the source goes on), not a TypeError out of the source."""
    import decimal
    import io

    import fastavro

    schema = {"type": "record", "name": "Price", "fields": [
        {"name": "p", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6,
                               "scale": 2}}]}
    payloads = []
    for value in ("1.25", "2.50"):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema),
                                   {"p": decimal.Decimal(value)})
        payloads.append(buffer.getvalue())
    example = pd.DataFrame({"p": pd.Series([], dtype="int64")})
    good, owners, failed = convert(make_decoder(rtnb.formats.avro(schema), example), example,
                                   "s", payloads)
    assert len(good) == 0 and owners == []
    assert [i for i, _ in failed] == [0, 1]
    assert failed[0][1] == "column 'p' (int64): Decimal('1.25') is not an integer", failed
