#!/usr/bin/env bash
# Regenerates tests/schema/: JSON Schemas of Grafana's own dashboard model, made from the
# TypeScript types that Grafana publishes in the npm package @grafana/schema, by
# ts-json-schema-generator. The tests validate grafana/dashboards/*.json against them
# without needing npm at run time; run this again (and commit the result) to move to a
# newer Grafana. Needs node and npm; installs into a temporary directory only.
set -euo pipefail
cd "$(dirname "$0")/.."

GRAFANA_SCHEMA=13.2.3   # @grafana/schema: the Grafana release whose model is the reference
GENERATOR=2.10.0        # ts-json-schema-generator
TYPESCRIPT=5.9.3        # typescript, a peer dependency of the generator
# Panel plugins the dashboard may use; each gets its options (and field config) schema.
PANELS=(bargauge gauge stat table timeseries)

out=tests/schema
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "==> installing @grafana/schema@$GRAFANA_SCHEMA, ts-json-schema-generator@$GENERATOR"
(
    cd "$work"
    npm init -y >/dev/null
    npm install --no-audit --no-fund --silent --save-exact \
        "@grafana/schema@$GRAFANA_SCHEMA" \
        "ts-json-schema-generator@$GENERATOR" \
        "typescript@$TYPESCRIPT" >/dev/null
)
pkg="$work/node_modules/@grafana/schema"
types="$pkg/dist/types/raw"

generate() { # <.d.ts file> <type name> <output file>
    "$work/node_modules/.bin/ts-json-schema-generator" \
        --path "$1" --type "$2" --expose export --no-type-check --tsconfig "$work/tsconfig.json" \
        --out "$3"
}
# Resolve `import * as common from '@grafana/schema'` in the panel types through node_modules.
printf '{"compilerOptions": {"moduleResolution": "node", "skipLibCheck": true}}\n' \
    >"$work/tsconfig.json"

mkdir -p "$out"
rm -f "$out"/grafana-*.schema.json
echo "==> Dashboard"
generate "$types/dashboard/x/types.gen.d.ts" Dashboard "$out/grafana-dashboard.schema.json"
for panel in "${PANELS[@]}"; do
    file="$types/composable/$panel/panelcfg/x/types.gen.d.ts"
    echo "==> panel $panel"
    generate "$file" Options "$out/grafana-panel-$panel-options.schema.json"
    if grep -q '^export interface FieldConfig ' "$file"; then
        generate "$file" FieldConfig "$out/grafana-panel-$panel-fieldconfig.schema.json"
    fi
done

# The schema version the same release writes into new dashboards, and its panel version.
schema_version="$(node -e "import('$pkg/dist/esm/raw/dashboard/x/types.gen.mjs')
    .then(m => console.log(m.defaultDashboard.schemaVersion))")"
plugin_version="$(node -e "import('$pkg/dist/esm/raw/composable/timeseries/panelcfg/x/types.gen.mjs')
    .then(m => console.log(m.pluginVersion))")"

python3 - "$out" "$GRAFANA_SCHEMA" "$GENERATOR" "$schema_version" "$plugin_version" "${PANELS[@]}" <<'PY'
import json
import pathlib
import sys

out, package, generator, schema_version, plugin_version, *panels = sys.argv[1:]
source = f"@grafana/schema@{package} via ts-json-schema-generator@{generator}"
for path in sorted(pathlib.Path(out).glob("grafana-*.schema.json")):
    schema = json.loads(path.read_text())
    schema = {"$comment": f"Generated from {source} by scripts/gen-grafana-schema.sh; "
              "do not edit.", **schema}
    path.write_text(json.dumps(schema, indent=2, sort_keys=False) + "\n")
meta = {
    "$comment": "Written by scripts/gen-grafana-schema.sh; do not edit.",
    "package": "@grafana/schema",
    "version": package,
    "generator": f"ts-json-schema-generator@{generator}",
    "schemaVersion": int(schema_version),
    "pluginVersion": plugin_version,
    "panels": panels,
}
pathlib.Path(out, "grafana-schema-source.json").write_text(json.dumps(meta, indent=2) + "\n")
PY
echo "==> wrote $out (dashboard schemaVersion $schema_version)"
