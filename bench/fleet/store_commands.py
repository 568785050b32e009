"""`lokaal-bench store add|export|list`: the fleet's results store (bench/fleet/store.py, docs/fleet.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import EXIT_FAILED_CELLS, EXIT_OK
from bench.readers.printing import Column, Output, Table


def store_add_command(args: argparse.Namespace, out: Output) -> int:
    from bench.fleet.store import add

    report = add(args.results, Path(args.db))
    for path in report.added:
        out.message(f"added {path}")
    for path in report.replaced:
        out.message(f"replaced the older version of {path} (resumed since it was added)")
    for path, why in report.refused:
        out.message(f"refused {path}: {why}", style="red")
    out.message(f"{args.db}: {len(report.added)} added, {len(report.replaced)} replaced, {len(report.skipped)} "
                f"already there, {len(report.refused)} refused")
    return EXIT_FAILED_CELLS if report.refused else EXIT_OK


def store_export_command(args: argparse.Namespace, out: Output) -> int:
    from bench.fleet.store import export_parquet

    for path in export_parquet(Path(args.db), Path(args.parquet)):
        out.message(f"wrote {path}")
    return EXIT_OK


def store_list_command(args: argparse.Namespace, out: Output) -> int:
    from bench.fleet.store import connect

    table = Table("store", [Column("name"), Column("created"), Column("campaign"), Column("status"),
                            Column("cells", numeric=True), Column("records", numeric=True), Column("seal")],
                  title=f"results store {args.db}")
    with connect(Path(args.db), write=False) as con:
        rows = con.execute(
            "SELECT s.name, s.created, s.campaign_id, s.status, (SELECT count(*) FROM cells c WHERE c.seal = s.seal), "
            "(SELECT count(*) FROM records r WHERE r.seal = s.seal), s.seal FROM result_sets s ORDER BY created, name"
        ).fetchall()
    for name, created, campaign, status, cells, records, seal in rows:
        table.add(name=name, created=created, campaign=campaign, status=status, cells=cells, records=records,
                  seal=seal[:12])
    out.table(table)
    return EXIT_OK
