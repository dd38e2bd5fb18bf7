#!/usr/bin/env python3
"""Rerun the DuckDB queries of docs/fleet.md on this repository's fixtures and
rewrite the output under each one, so that what the page shows is what DuckDB
answers.

  scripts/fleet-doc.py [--check]

In a temporary directory (with `fixtures` linked to the repository's), it runs
the page's dataset commands:

  conntrace replay --each fixtures/*.pcap fixtures/causes/*.pcap -f parquet -o fleet/
  conntrace replay fixtures/causes/go-X.pcap -f parquet -o by-node/node=go-X  (each go-*)

then every ```sql block of the page in order, in one DuckDB connection; a
block whose first line is `-- not run here` (ClickHouse, Spark) is left alone.
The output of a query goes in the ```text block right after it (added when
missing). --check exits 1 if the page would change. The binary is
$CONNTRACE_BIN, else target/debug/conntrace.
"""

import glob
import os
import re
import subprocess
import sys
import tempfile

import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "fleet.md")
BLOCK = re.compile(r"```sql\n(.*?)```\n(?:```text\n.*?```\n)?", re.S)


def make_datasets(binary, work):
    os.symlink(os.path.join(ROOT, "fixtures"), os.path.join(work, "fixtures"))
    files = sorted(glob.glob("fixtures/*.pcap", root_dir=work)) + sorted(
        glob.glob("fixtures/causes/*.pcap", root_dir=work)
    )
    subprocess.run(
        [binary, "replay", "--each", *files, "-f", "parquet", "-o", "fleet/"],
        cwd=work,
        check=True,
    )
    for f in sorted(glob.glob("fixtures/causes/go-*.pcap", root_dir=work)):
        node = os.path.basename(f)[: -len(".pcap")]
        subprocess.run(
            [binary, "replay", f, "-f", "parquet", "-o", f"by-node/node={node}"],
            cwd=work,
            check=True,
        )


def render(text, con):
    def run(m):
        sql = m.group(1)
        out = f"```sql\n{sql}```\n"
        if sql.startswith("-- not run here"):
            return m.group(0)
        if sql.lstrip().upper().startswith("CREATE"):
            con.execute(sql)
            return out
        r = con.sql(sql)
        return out + "```text\n" + str(r).rstrip() + "\n```\n"

    return BLOCK.sub(run, text)


def main():
    check = "--check" in sys.argv[1:]
    binary = os.environ.get("CONNTRACE_BIN", os.path.join(ROOT, "target/debug/conntrace"))
    with open(PAGE) as f:
        before = f.read()
    with tempfile.TemporaryDirectory(prefix="conntrace-fleet-") as work:
        make_datasets(binary, work)
        os.chdir(work)
        after = render(before, duckdb.connect())
    if after == before:
        print("docs/fleet.md: every output is what DuckDB answers")
        return 0
    if check:
        print("docs/fleet.md: outputs differ (run scripts/fleet-doc.py)", file=sys.stderr)
        return 1
    with open(PAGE, "w") as f:
        f.write(after)
    print("docs/fleet.md: outputs rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
