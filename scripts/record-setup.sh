# Sourced by the scripts that write a record (measure.sh, stability.sh), from
# the package root: installs what is missing, builds the release txsim, and
# sets `txsim` (its path), `revision` (git HEAD) and `clean` (true when the
# tree has no uncommitted change to tracked files).
bash scripts/setup.sh
swift build -c release --product txsim >&2
txsim=.build/release/txsim
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
clean=true
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || clean=false
