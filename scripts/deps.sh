#!/usr/bin/env bash
# The direct dependencies of sessiongate, as Cargo.lock resolves them: name,
# version, kind (normal, build, dev), licence and the crate's own description.
# Read from `cargo metadata` (the versions are Cargo.lock's; no network once
# the crates are fetched), so the list cannot drift from the build the way a
# hand-copied table does.
#
#   scripts/deps.sh          # a Markdown table
#   scripts/deps.sh --tsv    # tab-separated, for scripts
#   scripts/deps.sh --check  # every crate in Cargo.lock and every package
#                            # in clients/web/package-lock.json under a
#                            # permissive licence (the test command runs it)
#
# The tree below them: cargo tree -e normal --depth 1 (or --depth 2, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:---markdown}" in --markdown | --tsv | --check) ;; *) echo "usage: $0 [--markdown|--tsv|--check]" >&2; exit 2 ;; esac
metadata=$(mktemp)
trap 'rm -f "$metadata"' EXIT
cargo metadata --format-version 1 --locked --offline >"$metadata" 2>/dev/null ||
  cargo metadata --format-version 1 --locked >"$metadata"
python3 - "$metadata" "${1:---markdown}" <<'PY'
import json, sys

meta = json.load(open(sys.argv[1]))
fmt = sys.argv[2]

# Permissive licences (SPDX ids): what the product may depend on. Unicode-3.0
# (ICU4X, under url), Zlib, BSL-1.0, CDLA-Permissive-2.0 (a root
# certificate list), CC0-1.0 and Python-2.0 (PSF) are permissive as well.
PERMISSIVE = {
    "MIT", "MIT-0", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-1-Clause", "BSD-2-Clause",
    "BSD-3-Clause", "0BSD", "ISC", "MPL-2.0", "Zlib", "BSL-1.0", "Unicode-3.0", "Unlicense",
    "CC0-1.0", "CDLA-Permissive-2.0", "Python-2.0",
}


def permissive(expr):
    """Whether an SPDX expression ('A OR B', 'A AND (B OR C)', 'A/B') allows
    a permissive use: one side of an OR, both sides of an AND."""
    tokens = expr.replace("(", " ( ").replace(")", " ) ").replace("/", " OR ").split()
    pos = 0

    def term():
        nonlocal pos
        if tokens[pos] == "(":
            pos += 1
            ok = either()
            pos += 1  # ")"
            return ok
        name = tokens[pos]
        pos += 1
        if pos < len(tokens) and tokens[pos] == "WITH":
            name += " WITH " + tokens[pos + 1]
            pos += 2
        return name in PERMISSIVE

    def joined(op, operand, combine):
        """operand (op operand)*, every operand read (no short cut)."""
        nonlocal pos
        ok = operand()
        while pos < len(tokens) and tokens[pos] == op:
            pos += 1
            ok = combine(operand(), ok)
        return ok

    def either():
        return joined("OR", lambda: joined("AND", term, lambda a, b: a and b), lambda a, b: a or b)

    try:
        return either() and pos == len(tokens)
    except IndexError:
        return False


if fmt == "--check":
    bad = [(p["name"], p["version"], p.get("license") or "no licence field") for p in meta["packages"]
           if not permissive(p.get("license") or "")]
    lock = json.load(open("clients/web/package-lock.json"))
    npm = [(path.split("node_modules/")[-1], v.get("version", "?"), v.get("license") or "no licence field")
           for path, v in lock["packages"].items() if path and not permissive(v.get("license") or "")]
    for name, version, lic in bad + npm:
        print(f"not a permissive licence: {name} {version}: {lic}")
    crates = len(meta["packages"])
    packages = sum(1 for path in lock["packages"] if path)
    print(f"licences: {crates} crates and {packages} npm packages checked, {len(bad) + len(npm)} not permissive")
    sys.exit(1 if bad or npm else 0)
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
