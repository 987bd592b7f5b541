#!/usr/bin/env bash
# The direct dependencies of sessiongate, as Cargo.lock resolves them: name,
# version, kind (normal, build, dev), licence and the crate's own description.
# Read from `cargo metadata` (the versions are Cargo.lock's; no network once
# the crates are fetched), so the list cannot drift from the build the way a
# hand-copied table does.
#
#   scripts/deps.sh          # a Markdown table
#   scripts/deps.sh --tsv    # tab-separated, for scripts
#
# The tree below them: cargo tree -e normal --depth 1 (or --depth 2, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:---markdown}" in --markdown | --tsv) ;; *) echo "usage: $0 [--markdown|--tsv]" >&2; exit 2 ;; esac
metadata=$(mktemp)
trap 'rm -f "$metadata"' EXIT
cargo metadata --format-version 1 --locked --offline >"$metadata" 2>/dev/null ||
  cargo metadata --format-version 1 --locked >"$metadata"
python3 - "$metadata" "${1:---markdown}" <<'PY'
import json, sys

meta = json.load(open(sys.argv[1]))
fmt = sys.argv[2]
packages = {p["id"]: p for p in meta["packages"]}
root = meta["resolve"]["root"]
node = next(n for n in meta["resolve"]["nodes"] if n["id"] == root)
order = ["normal", "build", "dev"]


def first_sentence(text):
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


rows = []
for dep in node["deps"]:
    pkg = packages[dep["pkg"]]
    kinds = sorted({k["kind"] or "normal" for k in dep["dep_kinds"]}, key=order.index)
    rows.append((
        pkg["name"],
        pkg["version"],
        ", ".join(kinds),
        pkg.get("license") or pkg.get("license_file") or "?",
        first_sentence(pkg.get("description") or ""),
    ))
rows.sort(key=lambda r: (order.index(r[2].split(", ")[0]), r[0]))
if fmt == "--tsv":
    for r in rows:
        print("\t".join(r))
else:
    print("| crate | version | kind | licence | description |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| `%s` | %s | %s | %s | %s |" % (r[0], r[1], r[2], r[3], r[4].replace("|", "\\|")))
PY
