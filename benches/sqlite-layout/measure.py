"""Times lookups by hash in the files build.py made: per layout, known and
never-seen keys at 1,000 and 1,000,000 rows, one connection each with a
2 GiB memory map, after 100,000 known and 20,000 never-seen untimed
lookups; 12 rounds of 2,000 lookups alternating the files, the first two
untimed; medians in microseconds (Python's own overhead included).

Run pinned, on a quiet machine: taskset -c 1 python3 measure.py
"""
import sqlite3, time, random, hashlib, struct, statistics
def conn(path):
    c = sqlite3.connect(path)
    c.execute("PRAGMA mmap_size=2147483648")
    return c
def keys(n, count, seed, known):
    r = random.Random(seed)
    out = []
    for _ in range(count):
        if known:
            i = r.randrange(n); out.append(hashlib.blake2b(b"key%d" % i, digest_size=32).digest())
        else:
            out.append(hashlib.blake2b(b"never%d" % r.getrandbits(64), digest_size=32).digest())
    return out
def run(layout, c, hs):
    if layout == 'index':
        q = "SELECT id, name, scopes, revoked_at, expires_at FROM k WHERE key_hash = ?"
        t = time.perf_counter()
        for h in hs:
            c.execute(q, (h,)).fetchone()
        return (time.perf_counter() - t) / len(hs) * 1e6
    else:
        q = "SELECT rest, id, name, scopes, revoked_at, expires_at FROM k WHERE h = ?"
        t = time.perf_counter()
        for h in hs:
            row = c.execute(q, (struct.unpack(">q", h[:8])[0],)).fetchone()
            if row is not None and row[0] != h[8:]: row = None
        return (time.perf_counter() - t) / len(hs) * 1e6
res = {}
conns = {(l, n): conn("%s_%d.db" % (l, n)) for l in ['index','intkey'] for n in [1000, 1000000]}
for (l, n), c in conns.items():
    run(l, c, keys(n, 100000, 99, True)); run(l, c, keys(n, 20000, 98, False))
for rnd in range(12):
    for (l, n), c in conns.items():
        for known in [True, False]:
            v = run(l, c, keys(n, 2000, rnd*7 + known, known))
            if rnd >= 2: res.setdefault((l, known, n), []).append(v)
for l in ['index', 'intkey']:
    for known in [True, False]:
        a = statistics.median(res[(l, known, 1000)]); b = statistics.median(res[(l, known, 1000000)])
        print("%-7s %-10s 1k %.2f us  1M %.2f us  growth %+.2f  ratio %.2f" % (l, "known" if known else "never-seen", a, b, b-a, b/a))
