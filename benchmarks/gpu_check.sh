#!/usr/bin/env bash
# One prepared check of a CUDA machine: the CUDA-only tests, then PVDM at the paper's size.
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine; writes benchmarks/results/gpu_check.json
#   PYTHON=/path/to/venv/bin/python bash benchmarks/gpu_check.sh --out /tmp/gpu_check.json
#   bash benchmarks/gpu_check.sh --cpu-tiny --out /tmp/g.json   # no CUDA: same code, tiny, on CPU
#
# No arguments are needed. Steps: (1) `pytest -m gpu` (skipped with --cpu-tiny); (2)
# benchmarks/gpu_check.py: official-size forward + backward, one training step of each stage
# with the `ucf101-256` run presets, one 16-frame 256 x 256 clip with the pipeline's default
# sampler, and the projected time of generating the 2,048 clips of the FVD protocol (see that
# file for the JSON). Every argument goes to gpu_check.py. Python: $PYTHON, else .venv/bin/python
# in the checkout, else python3; the checkout's src/ comes first on the import path. A failure
# ends the script with one line `gpu_check: FAILED: ...` and exit code 1; the tests' outcome is
# in the JSON too, and the measurements run even when a test fails.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1
fail() {
    echo "gpu_check: FAILED: $*" >&2
    exit 1
}

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
cuda="$("$python" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null)" ||
    fail "$python cannot import torch; set PYTHON to the project's virtual environment's python"

cpu_tiny=0
for arg in "$@"; do
    [[ "$arg" == --cpu-tiny ]] && cpu_tiny=1
done

tests=()
tests_rc=0
if ((!cpu_tiny)); then
    [[ "$cuda" == 1 ]] ||
        fail "torch sees no CUDA device; on a CPU machine run: bash benchmarks/gpu_check.sh --cpu-tiny"
    log="$(mktemp)"
    echo "pytest -m gpu ..."
    "$python" -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$log"
    tests_rc=${PIPESTATUS[0]}
    summary="$(grep -v '^\s*$' "$log" | tail -n 1)"
    rm -f "$log"
    tests=(--gpu-tests-rc "$tests_rc" --gpu-tests-summary "$summary")
fi

"$python" benchmarks/gpu_check.py ${tests[@]+"${tests[@]}"} "$@"
rc=$?
if ((rc == 1)); then
    exit 1 # gpu_check.py printed its one-line failure
elif ((rc != 0)); then
    fail "benchmarks/gpu_check.py ended with exit code $rc"
fi
if ((tests_rc == 5)); then
    fail "pytest -m gpu collected no test"
elif ((tests_rc != 0)); then
    fail "pytest -m gpu: $summary"
fi
echo "gpu_check: OK"
