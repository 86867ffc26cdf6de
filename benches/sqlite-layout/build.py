"""Builds SQLite files of 1,000 and 1,000,000 rows in two lookup layouts, for
measure.py (see docs/performance.md, "What is left on SQLite"):

- index: a key table with the shipped columns and a unique index on the
  32-byte hash (what SqliteStore does);
- intkey: a table keyed by the hash's first 8 bytes as its INTEGER PRIMARY
  KEY (SQLite's rowid tree), the other 24 bytes compared after the read.

Run in an empty folder: python3 build.py (about 4 minutes, 360 MiB).
"""
import sqlite3, os, sys, random, hashlib, struct, json
def build(path, n, layout):
    if os.path.exists(path): os.remove(path)
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=WAL")
    if layout == 'index':
        c.execute("""CREATE TABLE k (id TEXT PRIMARY KEY, name TEXT, scopes TEXT, metadata TEXT, hint TEXT,
            key_hash BLOB NOT NULL, created_at INTEGER, expires_at INTEGER, revoked_at INTEGER, revoked_reason TEXT,
            rotated_at INTEGER, parent_key_id TEXT, last_used_at INTEGER)""")
    else:
        c.execute("""CREATE TABLE k (h INTEGER PRIMARY KEY, rest BLOB NOT NULL, id TEXT, name TEXT, scopes TEXT,
            revoked_at INTEGER, expires_at INTEGER)""")
    rnd = random.Random(1)
    rows = []
    for i in range(n):
        hsh = hashlib.blake2b(b"key%d" % i, digest_size=32).digest()
        kid = "%032x" % rnd.getrandbits(128)
        if layout == 'index':
            rows.append((kid, "service %d" % i, '["orders:read","orders:write"]', '{}', "sk_...abcd", hsh, 1700000000000000+i, None, None, None, None, None, None))
        else:
            h = struct.unpack(">q", hsh[:8])[0]
            rows.append((h, hsh[8:], kid, "service %d" % i, '["orders:read","orders:write"]', None, None))
        if len(rows) == 50000:
            c.executemany("INSERT INTO k VALUES (%s)" % ",".join("?"*len(rows[0])), rows); rows = []
    if rows: c.executemany("INSERT INTO k VALUES (%s)" % ",".join("?"*len(rows[0])), rows)
    if layout == 'index':
        c.execute("CREATE UNIQUE INDEX k_hash ON k(key_hash)")
    c.commit(); c.execute("PRAGMA wal_checkpoint(TRUNCATE)"); c.close()
if __name__ == "__main__":
    for layout in ['index', 'intkey']:
        for n in [1000, 1000000]:
            build("%s_%d.db" % (layout, n), n, layout)
            print(layout, n, os.path.getsize("%s_%d.db" % (layout, n)) // 1024, "KiB", flush=True)
