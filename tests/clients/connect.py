"""clickhouse-connect (unmodified, from PyPI) against a running shardhouse.

Usage: connect.py PORT. Exits non-zero with the failing check on any mismatch.
"""

import datetime
import decimal
import sys
import uuid

import clickhouse_connect
import pyarrow as pa

port = int(sys.argv[1])
client = clickhouse_connect.get_client(host="127.0.0.1", port=port, compress=False)

# Handshake: version(), timezone() and system.settings were read by get_client.
assert client.server_version, "no server version"
assert client.command("SELECT 1") == 1

client.command("DROP TABLE IF EXISTS cc_rows")
client.command(
    """CREATE TABLE cc_rows (
        id UInt64, name String, city LowCardinality(String), score Nullable(Float64),
        d Date, t DateTime, tags Array(String), u UUID, amount Decimal(10, 2), ok Bool,
        small Int8, ts64 DateTime64(3)
    ) ENGINE = MergeTree ORDER BY id"""
)
u1 = uuid.UUID("12345678-1234-5678-9abc-def012345678")
rows = [
    [1, "alice", "Paris", 1.5, datetime.date(2024, 1, 2), datetime.datetime(2024, 1, 2, 3, 4, 5),
     ["a", "b"], u1, decimal.Decimal("12.34"), True, -5, datetime.datetime(2024, 1, 2, 3, 4, 5, 678000)],
    [2, "bob", "Berlin", None, datetime.date(2013, 6, 1), datetime.datetime(2013, 6, 1, 0, 0, 0),
     [], uuid.UUID(int=1), decimal.Decimal("-0.01"), False, 7, datetime.datetime(2013, 6, 1)],
    [3, "carol", "Paris", 3.0, datetime.date(1970, 1, 2), datetime.datetime(1970, 1, 1, 0, 0, 1),
     ["x"], uuid.UUID(int=0), decimal.Decimal("0"), True, 0, datetime.datetime(1970, 1, 1)],
]
names = ["id", "name", "city", "score", "d", "t", "tags", "u", "amount", "ok", "small", "ts64"]
summary = client.insert("cc_rows", rows, column_names=names)
assert summary.written_rows == 3, f"written_rows {summary.written_rows}"

# Every type comes back as it went in (Native format).
result = client.query("SELECT * FROM cc_rows ORDER BY id")
assert list(result.column_names) == names, result.column_names
got = [list(r) for r in result.result_rows]
for want_row, got_row in zip(rows, got):
    for n, w, g in zip(names, want_row, got_row):
        if isinstance(g, datetime.datetime):
            g = g.replace(tzinfo=None)
        assert w == g, f"{n}: wrote {w!r}, read {g!r}"
assert len(got) == 3

# Aggregates and parameters (server-side binding: param_<name>).
assert client.command("SELECT count() FROM cc_rows WHERE city = 'Paris'") == 2
r = client.query("SELECT name FROM cc_rows WHERE id = {id:UInt64}", parameters={"id": 2})
assert r.result_rows == [("bob",)], r.result_rows
r = client.query("SELECT city, count() AS c FROM cc_rows GROUP BY city ORDER BY city")
assert r.result_rows == [("Berlin", 1), ("Paris", 2)], r.result_rows

# Arrow in and out.
table = client.query_arrow("SELECT id, name, score FROM cc_rows ORDER BY id")
assert table.num_rows == 3 and table.column("name").to_pylist() == ["alice", "bob", "carol"]
client.command("DROP TABLE IF EXISTS cc_arrow")
client.command("CREATE TABLE cc_arrow (id UInt64, name String, score Nullable(Float64)) ENGINE = MergeTree ORDER BY id")
client.insert_arrow("cc_arrow", table)
more = pa.table({"id": pa.array([10, 11], pa.uint64()), "name": ["x", "y"], "score": [None, 2.5]})
client.insert_arrow("cc_arrow", more)
assert client.command("SELECT count() FROM cc_arrow") == 5
assert client.query("SELECT sum(score) FROM cc_arrow").result_rows[0][0] == 1.5 + 3.0 + 2.5

# An error is raised as the server's ClickHouse exception, and the server keeps serving.
try:
    client.query("SELECT nope FROM cc_rows")
    raise AssertionError("an unknown column did not fail")
except clickhouse_connect.driver.exceptions.DatabaseError as e:
    assert "Code: 47" in str(e), str(e)
assert client.command("SELECT count() FROM cc_rows") == 3
print("clickhouse-connect: ok")
