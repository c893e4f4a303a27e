#!/usr/bin/env python3
"""The layering check (DESIGN §2, issue 18): storage <- replication <-
coordinator <- query <- shardhouse. A crate may depend only on crates below
it (jepsen and benches are tools on top), and no openraft type is named
outside replication/. Exits non-zero with the offending lines."""

import json
import pathlib
import subprocess
import sys

RANK = {"storage": 0, "replication": 1, "coordinator": 2, "query": 3, "shardhouse": 4, "jepsen": 5, "benches": 5}

root = pathlib.Path(__file__).resolve().parent.parent
meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
                                 cwd=root, check=True, capture_output=True).stdout)
bad = []
for pkg in meta["packages"]:
    name = pkg["name"]
    if name not in RANK:
        bad.append(f"{name}: a workspace crate with no place in the layering")
        continue
    for dep in pkg["dependencies"]:
        d = dep["name"]
        # Root integration tests drive the tools (jepsen) as a dev-dependency.
        tool_for_tests = dep["kind"] == "dev" and RANK.get(d) == 5
        if d in RANK and RANK[d] >= RANK[name] and d != name and not tool_for_tests:
            bad.append(f"{name} depends on {d} ({dep['kind'] or 'normal'}): a crate never reaches up")

for path in root.rglob("*"):
    rel = path.relative_to(root)
    top = rel.parts[0] if rel.parts else ""
    if top in ("replication", "target", ".git") or path.suffix not in (".rs", ".toml") or not path.is_file():
        continue
    if rel == pathlib.Path("Cargo.toml"):
        continue  # the workspace pins the version for replication
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        code = line.split("//", 1)[0]
        if "openraft::" in code or code.lstrip().startswith("openraft ") or "use openraft" in code:
            bad.append(f"{rel}:{n}: names openraft outside replication/: {line.strip()}")

if bad:
    print("layering check failed:\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
print(f"layering ok: {len(meta['packages'])} crates")
