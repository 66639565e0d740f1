#!/usr/bin/env bash
# The stated minimum Rust version (workspace rust-version, 1.88: let chains)
# can only be proven by building with that toolchain, which cannot be
# installed on the CI host. What is checked instead:
#   1. every package in Cargo.lock that the workspace builds declares a
#      rust-version at or below ours (a dependency that needs a newer
#      compiler fails here);
#   2. clippy's `incompatible_msrv` lint (on by default, run by .ci/run with
#      -D warnings) reads rust-version and fails on standard-library APIs
#      stabilised after it.
# Language features newer than 1.88 are not caught by either; a build with
# `cargo +1.88 build --workspace` where that toolchain exists closes the gap.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
meta = json.load(sys.stdin)
def version(text):
    return tuple(int(p) for p in (text.split(".") + ["0", "0"])[:3])
ours = {p["name"]: p.get("rust_version") for p in meta["packages"] if p["id"] in meta["workspace_members"]}
msrv = {v for v in ours.values()}
if len(msrv) != 1 or None in msrv:
    sys.exit(f"msrv-check: workspace members state different or no rust-version: {ours}")
msrv = msrv.pop()
used = {n["id"] for n in meta["resolve"]["nodes"]}
newer = sorted(
    (p["name"], p["version"], p["rust_version"])
    for p in meta["packages"]
    if p["id"] in used and p.get("rust_version") and version(p["rust_version"]) > version(msrv)
)
for name, ver, rv in newer:
    print(f"msrv-check: {name} {ver} needs Rust {rv}, above the workspace rust-version {msrv}")
if newer:
    sys.exit(1)
highest = max((version(p["rust_version"]), p["name"]) for p in meta["packages"]
              if p["id"] in used and p.get("rust_version") and p["name"] not in ours)
print(f"msrv-check: rust-version {msrv}; {len(used)} packages in the lock file, the highest "
      f"dependency requirement is {highest[1]} at %d.%d.%d" % highest[0])
'
