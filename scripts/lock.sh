#!/usr/bin/env bash
# Regenerate constraints.txt: every package of the core, all extras, the dev tools and the three integrations,
# pinned with == for CPython 3.11 on linux x86_64.
#
# The local distributions (scanflow, scanflow-airflow, scanflow-prefect, scanflow-flyte) are given to the
# resolver as editable paths, so that scanflow's extras (airflow = ["scanflow-airflow"], ...) and the
# integrations' "scanflow" dependency resolve to this checkout and not to PyPI (where scanflow-airflow does
# not exist and an unrelated "scanflow" 0.1.1 does). They are then left out of the output: a constraints
# file can't hold editable requirements, and pip takes them from the -e arguments.
#
# uv does not read pip's configuration, so it is pointed at the local CPU wheel of torch explicitly; it
# resolves torch to 2.13.0+cpu, and the pin is written as torch==2.13.0, which pip satisfies with the local
# 2.13.0+cpu file (find-links) and which stays installable on a machine without it.
#
# Usage: scripts/lock.sh              keep the current pins where they still fit (uv prefers them)
#        scripts/lock.sh --upgrade    re-resolve everything to the newest allowed releases
#        (uses uv on PATH or $UV, or installs uv into a throwaway venv)
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

uv=${UV:-$(command -v uv || true)}
if [[ -z "$uv" ]]; then
    tool_venv=$scratch/uv
    python3 -m venv "$tool_venv"
    "$tool_venv/bin/pip" install -q uv
    uv="$tool_venv/bin/uv"
fi

find_links=()
if [[ -d /opt/wheels ]]; then
    find_links=(--find-links /opt/wheels)
fi

input=$scratch/requirements.in
cat >"$input" <<'REQ'
-e .[all,dev]
-e ./integrations/airflow
-e ./integrations/prefect
-e ./integrations/flyte
REQ

# uv takes the pins already in the output file as preferences; torch's is left out, else uv would prefer
# PyPI's 2.13.0 (a CUDA build) over the local 2.13.0+cpu.
rm -f constraints.txt.new
if [[ -f constraints.txt ]]; then grep -v '^torch==' constraints.txt >constraints.txt.new || true; fi
"$uv" pip compile "$input" "$@" \
    --python-version 3.11 \
    --python-platform x86_64-unknown-linux-gnu \
    "${find_links[@]}" \
    --no-emit-package scanflow \
    --no-emit-package scanflow-airflow \
    --no-emit-package scanflow-prefect \
    --no-emit-package scanflow-flyte \
    --no-annotate \
    --quiet \
    --custom-compile-command "scripts/lock.sh" \
    --output-file constraints.txt.new

# 2.13.0+cpu -> 2.13.0 (see above).
# Rewritten only when it changes, so that `make` does not reinstall for an identical lock.
sed -i -e 's/^torch==\([0-9.]*\)+cpu$/torch==\1/' constraints.txt.new
if grep -q '^-e \|^nvidia-\|^triton==' constraints.txt.new; then
    echo "constraints.txt.new holds an editable or a CUDA package (was /opt/wheels used?); constraints.txt kept" >&2
    exit 1
fi
if cmp -s constraints.txt.new constraints.txt; then rm constraints.txt.new; else mv constraints.txt.new constraints.txt; fi
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) pins)"
