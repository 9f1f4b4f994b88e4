"""Binary record formats for sources (``decoder=``) and broker sinks (``encoder=``).

One format object reads what it writes: give the same one to a source and to a sink. Each
is checked against the frame's ``example`` when the source or sink is built (a schema that
cannot hold the example's columns is a :class:`~rtnb.ConfigError`).

- :func:`arrow`: Arrow IPC (``pyarrow.ipc``). A payload holding record batches becomes
  part of a micro-batch column by column, with no Python object per record. A sink writes
  one IPC stream per batch. Also accepted as the string ``"arrow"``.
- :func:`protobuf`: Protocol Buffers (the ``protobuf`` package's upb C backend), a message
  class you give; one message per row, parsed and turned into columns per batch.
- :func:`avro`: Avro (``fastavro``): ``avro(schema)`` for schemaless records (one per
  message, one message per row), ``avro()`` (or ``"avro"``) for object containers with
  their schema embedded (one per batch; the sink's schema comes from the example).

A payload that does not decode (truncated bytes, another schema, not Arrow at all) goes to
the source's dead letters with a reason naming the format and what arrived; the rest of the
batch goes on. Protobuf and fastavro are the ``formats`` extra (``pip install
'rtnb[formats]'``); pyarrow is a core dependency.

Examples
--------
>>> import pandas as pd, rtnb
>>> example = pd.DataFrame({"t": pd.Series([], dtype="datetime64[ns, UTC]"),
...                         "cpu": pd.Series([], dtype="float64")})
>>> batch = pd.DataFrame({"t": pd.to_datetime([0, 1], unit="s", utc=True).as_unit("ns"),
...                       "cpu": [0.5, 0.75]})
>>> fmt = rtnb.formats.arrow()
>>> (payload,) = fmt.bind(example).encode(batch)
>>> fmt.bind(example).decode(payload)[1]
{'t': '1970-01-01T00:00:01.000000000', 'cpu': 0.75}
"""

from __future__ import annotations

from typing import Any

from rtnb import _record
from rtnb._formats import (
    ArrowFormat,
    AvroFormat,
    Columns,
    Format,
    ProtobufFormat,
    TimeUnit,
    schema_of,
)

__all__ = ["ArrowFormat", "AvroFormat", "Columns", "Format", "ProtobufFormat", "arrow", "avro",
           "protobuf", "schema_of"]


def arrow() -> ArrowFormat:
    """Arrow IPC: each message an IPC stream (or file) of record batches.

    Decoding converts the columns of a whole batch of messages at once (no Python object
    per record); a message's columns are matched to the example by name (others are
    ignored; a missing one makes the message a dead letter). Encoding writes one IPC
    stream per batch (per key or partition where the sink splits by one). Arrow types map
    to pandas: timestamps (any unit or zone) to times, dictionaries to categories, nullable
    integers stay exact.

    Returns
    -------
    ArrowFormat
        The decoder and encoder (the string ``"arrow"`` is the same).

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> ex = pd.DataFrame({"n": pd.Series([], dtype="Int64")})
    >>> fmt = rtnb.formats.arrow().bind(ex)
    >>> (payload,) = fmt.encode(pd.DataFrame({"n": pd.array([1, None], dtype="Int64")}))
    >>> fmt.decode(payload)
    [{'n': 1}, {'n': None}]
    >>> fmt.decode(b"not arrow")
    Traceback (most recent call last):
    ...
    ValueError: not an Arrow IPC stream or file (9 bytes b'not arrow'): ...
    """
    return ArrowFormat()


def protobuf(message: Any, *, time_unit: TimeUnit = "ns") -> ProtobufFormat:
    r"""Protocol Buffers: one message of the class ``message`` per row.

    Parameters
    ----------
    message
        A generated message class (``metrics_pb2.Sample``), or its import path as text
        (``"metrics_pb2.Sample"``: what an exported script writes). Every column of the
        example needs a field of its name: numbers, ``bool``, ``string``, or for a time a
        ``google.protobuf.Timestamp`` (exact to the nanosecond) or an integer.
    time_unit
        The unit of integer fields holding times (epoch ``"s"``, ``"ms"``, ``"us"`` or
        ``"ns"``), both ways.

    Returns
    -------
    ProtobufFormat
        The decoder and encoder. A field with presence (proto3 ``optional``, a Timestamp)
        that is not set is a missing value; a plain proto3 scalar reads as its default when
        not set, as protobuf defines, so a column that may miss values needs ``optional``
        (the encoder refuses a missing value for a field without presence). A message
        carrying fields the class does not define is a dead letter (another message type).
        Protobuf cannot tell a message cut short at a field boundary from a shorter one:
        its missing fields read as their defaults (or as missing, with presence), and the
        row is a dead letter only where those do not fit the example.

    Raises
    ------
    ConfigError
        Not a message class; when bound to an example, a column without a field, a
        repeated field, a field that cannot be a column.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> from google.protobuf.duration_pb2 import Duration  # int64 seconds, int32 nanos
    >>> ex = pd.DataFrame({"seconds": pd.Series([], dtype="int64")})
    >>> fmt = rtnb.formats.protobuf(Duration).bind(ex)
    >>> fmt.encode(pd.DataFrame({"seconds": [3, 4]}))
    [b'\x08\x03', b'\x08\x04']
    >>> fmt.decode(b"\x08\x05")
    [{'seconds': 5}]
    """
    fmt = ProtobufFormat(message, time_unit=time_unit)
    cls = fmt.message
    module = getattr(cls, "__module__", None)
    if isinstance(message, str) or (module and module != "__main__"):
        # recorded with the class's import path, so an exported script imports it
        path = message if isinstance(message, str) else f"{module}.{cls.__qualname__}"
        kwargs = {} if time_unit == "ns" else {"time_unit": time_unit}
        object.__setattr__(fmt, _record.ATTR, _record.Call("call", protobuf, (path,), kwargs))
    return fmt


def avro(schema: dict[str, Any] | str | None = None, *,
         time_unit: TimeUnit = "ns") -> AvroFormat:
    r"""Avro: schemaless records of ``schema``, or object containers with their schema.

    Parameters
    ----------
    schema
        A record schema (a dict, or its JSON text): every message is one record written
        without header (one message per row). Without it, every message is an Avro object
        container (the Avro file format: its schema in its header, any number of
        records); a sink writes one per batch with the schema of the frame's example
        (:func:`schema_of`: times ``timestamp-nanos``).
    time_unit
        The unit of a plain ``long`` field holding a time column (timestamp logical types
        carry their own).

    Returns
    -------
    AvroFormat
        The decoder and encoder.

    Raises
    ------
    ConfigError
        Not an Avro record schema; a column of the example without a field of its name.

    Examples
    --------
    >>> import pandas as pd, rtnb
    >>> schema = {"type": "record", "name": "Sample",
    ...           "fields": [{"name": "host", "type": "string"},
    ...                      {"name": "cpu", "type": ["null", "double"]}]}
    >>> ex = pd.DataFrame({"host": pd.Series([], dtype="str"),
    ...                    "cpu": pd.Series([], dtype="float64")})
    >>> fmt = rtnb.formats.avro(schema).bind(ex)
    >>> fmt.encode(pd.DataFrame({"host": ["a"], "cpu": [0.5]}))
    [b'\x02a\x02\x00\x00\x00\x00\x00\x00\xe0?']
    >>> fmt.decode(b"\x02a")
    Traceback (most recent call last):
    ...
    ValueError: not a record of Avro schema 'Sample' (2 bytes b'\x02a'): truncated: ...
    """
    return AvroFormat(schema, time_unit=time_unit)


# The classes are documented and pickled (a decoder travels to Dask workers) as this module's.
for _cls in (ArrowFormat, AvroFormat, Columns, Format, ProtobufFormat):
    _cls.__module__ = __name__

# Recorded, so an exported script builds the same format.
arrow = _record.function(arrow)
avro = _record.function(avro)
