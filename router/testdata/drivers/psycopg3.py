"""psycopg 3 through pgferry (Debian's python3-psycopg, on libpq 15).

With prepare_threshold=0 every query with parameters is prepared under a
name psycopg chooses; past prepared_max it evicts with SQL DEALLOCATE (libpq
before 17 has no Close). Prints "OK <case>" or "FAIL <case>: <what>" per
case; router/drivers_e2e_test.go runs it with pgferry's DSN (a pool of two
servers: clients share them).
"""
import sys
import threading

import psycopg

dsn = sys.argv[1]


def result(name, problems):
    if problems:
        print(f"FAIL {name}: {'; '.join(problems[:5])} ({len(problems)} in all)", flush=True)
    else:
        print(f"OK {name}", flush=True)


def evictions():
    # More statements than psycopg keeps: each eviction is a DEALLOCATE.
    problems = []
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as c:
        c.prepared_max = 5
        for rnd in range(2):
            for i in range(30):
                v = c.execute(f"select %s::int + {i} as v", [rnd]).fetchone()[0]
                if v != rnd + i:
                    problems.append(f"statement {i} gave {v}")
    result("evictions", problems)


def concurrent():
    # Several clients, each with its own search_path and prepared
    # statements, on two servers.
    problems = []
    with psycopg.connect(dsn, autocommit=True) as c:
        for i in range(4):
            c.execute(f"create schema if not exists ps_{i}; create table if not exists ps_{i}.t(v int); truncate ps_{i}.t; insert into ps_{i}.t values ({i})")

    def client(i):
        try:
            with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as c:
                c.execute(f"set search_path to ps_{i}")
                for k in range(25):
                    v = c.execute("select v + %s from t", [k]).fetchone()[0]
                    if v != i + k:
                        problems.append(f"client {i} read {v - k}")
        except Exception as e:  # noqa: BLE001 - reported, not raised
            problems.append(f"client {i}: {e!r}")

    ts = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    result("concurrent", problems)


def transactions():
    problems = []
    with psycopg.connect(dsn) as c:  # not autocommit: psycopg opens transactions itself
        c.execute("create table if not exists ps_tx(v int)")
        c.commit()
        c.execute("insert into ps_tx values (1)")
        c.rollback()
        try:
            c.execute("select 1/0")
            problems.append("1/0 did not fail")
        except psycopg.errors.DivisionByZero:
            pass
        c.rollback()
        n = c.execute("select count(*) from ps_tx").fetchone()[0]
        if n != 0:
            problems.append(f"a rolled back insert left {n} rows")
        c.commit()
    result("transactions", problems)


for case in (evictions, concurrent, transactions):
    try:
        case()
    except Exception as e:  # noqa: BLE001 - reported, not raised
        print(f"FAIL {case.__name__}: {e!r}", flush=True)
