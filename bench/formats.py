"""Binary formats (issue 20): decode + coerce of 100,000 records per format vs JSON.

Same data, same run, interleaved rounds:

* data: 100,000 records (20,000 with ``--quick``) of the schema ``t`` (datetime64[ns, UTC],
  the event time), ``host`` (category of 12), ``cpu`` (float64, 1 % missing), ``requests``
  (int64), ``ok`` (bool), ``note`` (str, 1 % missing);
* payloads as rtnb's own sinks write them (``rtnb.sinks`` encoders): JSON and MessagePack
  one record per message with the time as ISO 8601 text; Protobuf (a message class with a
  ``google.protobuf.Timestamp``, upb backend) and schemaless Avro one record per message;
  Arrow IPC streams and Avro object containers with 1,000 records per message (a batch
  format: a producer sends record batches);
* timed: what a source does with a batch of messages, ``convert(decoder, example, ...)``
  (decode + coerce to the example, dead letters checked to be none), over batches of
  10,000 records (the sources' default ``max_batch``), garbage collected before each run;
* 5 rounds (3 with ``--quick``), every format once per round in a rotated order, medians;
  the ratio is median(JSON) / median(format): how many times faster than JSON. Every run's
  frame is checked equal to the data (``pandas.testing.assert_frame_equal``).

Target: every binary format decodes and coerces faster than JSON.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as tm
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

import rtnb.formats
from rtnb.sinks._core import make_encoder
from rtnb.sources._decode import make_decoder
from rtnb.sources._runner import convert

TITLE = "Binary formats: decode + coerce of 100,000 records, Arrow / Protobuf / Avro vs JSON " \
        "(issue 20)"

N_FULL, N_QUICK = 100_000, 20_000
BATCH = 10_000  # records per convert() call: the sources' default max_batch
PER_MESSAGE = 1_000  # records per Arrow stream / Avro container
HOSTS = [f"host-{i:02d}" for i in range(12)]
EXAMPLE = pd.DataFrame({
    "t": pd.Series([], dtype="datetime64[ns, UTC]"),
    "host": pd.Series([], dtype=pd.CategoricalDtype(HOSTS)),
    "cpu": pd.Series([], dtype="float64"),
    "requests": pd.Series([], dtype="int64"),
    "ok": pd.Series([], dtype=bool),
    "note": pd.Series([], dtype="str"),
})


def make_data(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(20)
    t0 = pd.Timestamp("2026-01-01", tz="UTC").value
    cpu = rng.uniform(0, 100, n)
    cpu[rng.random(n) < 0.01] = np.nan
    notes = np.array([f"ok {i % 97}" for i in range(n)], dtype=object)
    notes[rng.random(n) < 0.01] = None
    return pd.DataFrame({
        "t": pd.to_datetime(t0 + np.arange(n) * 10_000_000 + rng.integers(0, 999, n),
                            utc=True).as_unit("ns"),
        "host": pd.Categorical.from_codes(rng.integers(0, len(HOSTS), n),
                                          dtype=EXAMPLE["host"].dtype),
        "cpu": cpu,
        "requests": rng.integers(0, 10**9, n),
        "ok": rng.random(n) < 0.9,
        "note": pd.Series(notes, dtype="str"),
    })


def row_class() -> Any:
    """The message class of the schema (a descriptor built in Python: no protoc)."""
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="rtnb_bench_sample.proto", package="rtnbbench", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"])
    message = proto.message_type.add(name="Sample")
    for number, (name, kind) in enumerate([("t", f.TYPE_MESSAGE), ("host", f.TYPE_STRING),
                                           ("cpu", f.TYPE_DOUBLE), ("requests", f.TYPE_INT64),
                                           ("ok", f.TYPE_BOOL), ("note", f.TYPE_STRING)], 1):
        field = message.field.add(name=name, number=number, type=kind)
        if name == "t":
            field.type_name = ".google.protobuf.Timestamp"
        if name == "note":
            field.proto3_optional = True
            field.oneof_index = 0
            message.oneof_decl.add(name="_note")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("rtnbbench.Sample"))


def formats() -> dict[str, tuple[Any, str]]:
    """name -> (the format, as given to encoder= and decoder=; what a message holds)."""
    return {
        "JSON": ("json", "1 record"),
        "MessagePack": ("msgpack", "1 record"),
        "Protobuf": (rtnb.formats.protobuf(row_class()), "1 record"),
        "Avro (schemaless)": (rtnb.formats.avro(rtnb.formats.schema_of(EXAMPLE, "Sample")),
                              "1 record"),
        "Avro (object container)": ("avro", f"{PER_MESSAGE:,} records"),
        "Arrow IPC": ("arrow", f"{PER_MESSAGE:,} records"),
    }


def encode(fmt: Any, data: pd.DataFrame) -> list[list[bytes]]:
    """The messages of ``data`` in ``fmt``, cut into the batches a source converts."""
    encoder = make_encoder(fmt, EXAMPLE, "bench")
    batches = []
    for lo in range(0, len(data), BATCH):
        part = data.iloc[lo:lo + BATCH].reset_index(drop=True)
        if encoder.per_row:
            batches.append(encoder.encode(part))
        else:
            batches.append([m for i in range(0, len(part), PER_MESSAGE)
                            for m in encoder.encode(part.iloc[i:i + PER_MESSAGE]
                                                    .reset_index(drop=True))])
    return batches


def timed(decoder: Any, batches: Sequence[list[bytes]]) -> tuple[float, pd.DataFrame]:
    gc.collect()
    start = time.perf_counter()
    frames = []
    for payloads in batches:
        good, _, dead = convert(decoder, EXAMPLE, "s", payloads)
        if dead:
            msg = f"dead letters in the bench: {dead[:2]}"
            raise AssertionError(msg)
        frames.append(good)
    elapsed = time.perf_counter() - start
    return elapsed, pd.concat(frames, ignore_index=True)


def run(quick: bool, log: Callable[[str], None]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Run every format; return (markdown lines, target rows)."""
    n = N_QUICK if quick else N_FULL
    rounds = 3 if quick else 5
    data = make_data(n)
    chosen = formats()
    log(f"formats: encoding {n:,} records in {len(chosen)} formats ...")
    payloads = {name: encode(fmt, data) for name, (fmt, _) in chosen.items()}
    decoders = {name: make_decoder(fmt, EXAMPLE) for name, (fmt, _) in chosen.items()}
    times: dict[str, list[float]] = {name: [] for name in chosen}
    names = list(chosen)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            elapsed, frame = timed(decoders[name], payloads[name])
            tm.assert_frame_equal(frame, data)
            times[name].append(elapsed)
        log(f"formats: round {r + 1}/{rounds}: " + ", ".join(
            f"{name} {times[name][-1] * 1e3:.0f} ms" for name in names))
    median = {name: statistics.median(ts) for name, ts in times.items()}
    json_s = median["JSON"]
    lines = [
        f"## {TITLE}",
        "",
        *__doc__.splitlines()[2:18],  # type: ignore[union-attr]
        "",
        f"{n:,} records, {rounds} rounds, medians.",
        "",
        "| format | a message holds | bytes per record | decode + coerce | records/s "
        "| vs JSON |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    targets: list[tuple[str, str, str]] = []
    for name in names:
        size = sum(len(p) for batch in payloads[name] for p in batch) / n
        ratio = json_s / median[name]
        lines.append(f"| {name} | {chosen[name][1]} | {size:.1f} | {median[name] * 1e3:.0f} ms "
                     f"| {n / median[name]:,.0f} | {ratio:.2f}x |")
        if name not in ("JSON", "MessagePack"):
            targets.append((f"{name}: decode + coerce faster than JSON", f"{ratio:.2f}x",
                            "PASS" if ratio > 1 else "FAIL"))
    lines.append("")
    return lines, targets


if __name__ == "__main__":
    md, rows = run(quick=False, log=print)
    print("\n".join(md))
    print(rows)
