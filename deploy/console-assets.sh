#!/usr/bin/env bash
# The console's front-end assets from npm (never copied into the repository): the GOV.UK Design
# System (govuk-frontend), htmx for live fragments and axe-core for the browser tests' accessibility
# check. Installed under services/console/static/vendor/ (gitignored), served by the console at
# /static/vendor/. Idempotent: does nothing when the pinned versions are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=services/console/static/vendor
GOVUK_FRONTEND=${GOVUK_FRONTEND_VERSION:-5.14.0}
HTMX=${HTMX_VERSION:-2.0.11}
AXE=${AXE_VERSION:-4.11.4}
STAMP="$DEST/.versions"
WANT="govuk-frontend@$GOVUK_FRONTEND htmx.org@$HTMX axe-core@$AXE"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    exit 0
fi
command -v npm >/dev/null || { echo "console-assets: npm is needed (apt-get install npm)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm init -y >/dev/null && npm install --no-audit --no-fund --silent $WANT >/dev/null)
rm -rf "$DEST"
mkdir -p "$DEST/govuk" "$DEST/htmx" "$DEST/axe"
cp -r "$WORK/node_modules/govuk-frontend/dist/govuk/." "$DEST/govuk/"
cp "$WORK/node_modules/htmx.org/dist/htmx.min.js" "$DEST/htmx/"
cp "$WORK/node_modules/axe-core/axe.min.js" "$DEST/axe/"
echo "$WANT" > "$STAMP"
echo "console assets installed in $DEST ($WANT)"
