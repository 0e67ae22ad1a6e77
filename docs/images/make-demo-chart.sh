#!/usr/bin/env bash
# Regenerates docs/images/demo-chart.png, the README's picture: the demo's run, drawn by
# `fitlens report --chart`. Run from anywhere, in the environment where fitlens[demo,plot] is
# installed. The run is seeded; timings (and so the report page) differ from run to run.
set -euo pipefail
cd "$(dirname "$0")/../.."
run="$(mktemp -d)/demo"
fitlens demo --run-dir "$run" > /dev/null
fitlens report "$run" -o "$run/report.html" --chart docs/images/demo-chart.png --quiet
echo "wrote docs/images/demo-chart.png ($(wc -c < docs/images/demo-chart.png) bytes); report: $run/report.html"
