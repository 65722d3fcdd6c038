#!/usr/bin/env bash
# Builds the DocC documentation of DMAPools, NetStack and NetStackReports (swift-docc-plugin)
# into .build/docs/<Target>.doccarchive. Works offline once the package is
# resolved. Fails when a catalog article (Sources/*/<Target>.docc) has a
# warning, such as a link that does not resolve; warnings in the sources'
# doc comments (undocumented parameters) are printed but do not fail.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p .build/docs
log=.build/docs/build.log
: > "$log"
for target in DMAPools NetStack NetStackReports; do
    swift package --allow-writing-to-directory .build/docs \
        generate-documentation --target "$target" --output-path ".build/docs/$target.doccarchive" "$@" 2>&1 | tee -a "$log"
done
if grep -E -A1 '^warning' "$log" | grep -E -e '--> [^ ]+\.md:' >/dev/null; then
    echo "docs: the catalogs have warnings (see the '.md' locations above)" >&2
    exit 1
fi
echo "docs: .build/docs/DMAPools.doccarchive, .build/docs/NetStack.doccarchive, .build/docs/NetStackReports.doccarchive"
