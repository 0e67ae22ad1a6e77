#!/usr/bin/env bash
# Mutation score of src/fitlens/explain/reconstruct.py (issue #13 item 10), with mutmut 3.
#
# Runs from a scratch copy of the repository's tracked files (the working tree is never edited):
# mutmut mutates only reconstruct.py and runs the explain tests that exercise it, with the
# property tests at FITLENS_EXPLAIN_EXAMPLES examples each (default 20; the suite uses 200).
#
# Usage:
#   MUTMUT_PYTHON=/path/to/venv/bin/python benchmarks/mutation_reconstruct.sh [scratch_dir [mutant...]]
# With mutant names (as `mutmut results` prints them) only those are run, e.g. the survivors
# of an earlier run against new tests.
# MUTMUT_PYTHON is a Python with mutmut 3.x (3.8.1 measured) and the project's test
# dependencies (numpy, hypothesis, pytest, torch for tests/conftest.py). mutmut is not in the
# dev extras: install it in a venv of your own, e.g.
#   python3 -m venv ~/mutmut-venv && ~/mutmut-venv/bin/pip install -c constraints.txt mutmut
# and make the project's test dependencies visible to it (the same venv, or a .pth file naming
# the project venv's site-packages). MUTMUT_CHILDREN sets mutmut's --max-children (default 1).
# Prints mutmut's summary and the survivors; `cd <scratch_dir> && mutmut show <name>` shows one.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="${1:-/tmp/mutation-reconstruct}"
python="${MUTMUT_PYTHON:?set MUTMUT_PYTHON to a Python with mutmut 3.x installed}"
export FITLENS_EXPLAIN_EXAMPLES="${FITLENS_EXPLAIN_EXAMPLES:-20}" FITLENS_HYPOTHESIS=mutation

rm -rf "$scratch"
mkdir -p "$scratch"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$scratch")
# The test modules that call reconstruct.py directly (the end-to-end ones are much slower).
tests=""
for t in test_reconstruct test_bounds_by_hand test_reconstruct_tightness; do
  if [ -f "$scratch/tests/explain/$t.py" ]; then tests="$tests\"tests/explain/$t.py\", "; fi
done
cat >>"$scratch/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["src/fitlens"]
only_mutate = ["src/fitlens/explain/reconstruct.py"]
pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]
pytest_add_cli_args_test_selection = [$tests]
EOF
cd "$scratch"
unset PYTHONPATH
"$python" -m mutmut run --max-children "${MUTMUT_CHILDREN:-1}" "${@:2}" || true
echo
"$python" -m mutmut results --all true >"$scratch/results.txt" 2>&1 || true
echo "mutants by status (all of reconstruct.py; 'not checked' when only some were run):"
sed 's/.*: //' "$scratch/results.txt" | sort | uniq -c
echo "survivors:"
grep -E ': (survived|suspicious|timeout)$' "$scratch/results.txt" || true
