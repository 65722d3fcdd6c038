# Sourced by the scripts that write a record (measure.sh, stability.sh,
# regimes.sh, shared-queue-flows.sh), from the package root, with `out` (the
# record's path) set: makes the record's directory, installs what is missing,
# builds the release txsim, and sets `txsim` (its path), `revision` (git
# HEAD), `clean` (true when the tree has no uncommitted change to tracked
# files) and `tmp` (a scratch directory removed when the script exits).
mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bash scripts/setup.sh
swift build -c release --product txsim >&2
txsim=.build/release/txsim
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
clean=true
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || clean=false
