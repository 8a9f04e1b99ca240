#!/usr/bin/env bash
# Validate an AsyncAPI document with the AsyncAPI project's own parser (npm @asyncapi/parser), issue 15.
# Usage: deploy/asyncapi-check.sh [docs/asyncapi.yaml]   (installs the parser into deploy/.asyncapi-node)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
doc="$(cd "$(dirname "${1:-$here/../docs/asyncapi.yaml}")" && pwd)/$(basename "${1:-docs/asyncapi.yaml}")"
dir="$here/.asyncapi-node"
mkdir -p "$dir"
if [ ! -d "$dir/node_modules/@asyncapi/parser" ]; then
  (cd "$dir" && [ -f package.json ] || echo '{"name":"asyncapi-check","private":true}' > "$dir/package.json"
   cd "$dir" && npm install --silent --no-audit --no-fund "@asyncapi/parser@^3" >&2)
fi
cat > "$dir/check.cjs" <<'JS'
const fs = require('fs');
const { Parser } = require('@asyncapi/parser');
(async () => {
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const errors = diagnostics.filter(d => d.severity === 0);
  for (const d of diagnostics) console.error(`${['error','warning','info','hint'][d.severity]} ${d.code} ${d.path.join('.')}: ${d.message}`);
  if (!document || errors.length) { console.error(`invalid: ${errors.length} error(s)`); process.exit(1); }
  console.log(JSON.stringify({version: document.version(), channels: document.channels().length,
    messages: document.allMessages().length, operations: document.operations().length,
    errors: errors.length, warnings: diagnostics.filter(d => d.severity === 1).length}));
})().catch(e => { console.error(e); process.exit(2); });
JS
exec node "$dir/check.cjs" "$doc"
