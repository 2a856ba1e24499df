#!/usr/bin/env bash
# run_jobs <nj> <log pattern with JOB> <command...with JOB>
# Run nj copies of a command in parallel, JOB replaced by 1..nj in the command and the log
# name; fail (naming the logs) if any copy fails. Source this file to get the function.

run_jobs() {
    local nj=$1 log=$2
    shift 2
    local pids=() n
    for n in $(seq 1 "$nj"); do
        mkdir -p "$(dirname "${log//JOB/$n}")"
        ( "${@//JOB/$n}" ) > "${log//JOB/$n}" 2>&1 &
        pids+=($!)
    done
    local failed=()
    for n in $(seq 1 "$nj"); do
        wait "${pids[$((n - 1))]}" || failed+=("${log//JOB/$n}")
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo "ERROR: ${#failed[@]} of $nj jobs failed; see:" >&2
        for n in "${failed[@]}"; do
            echo "  $n" >&2
            tail -n 15 "$n" | sed 's/^/    /' >&2
        done
        return 1
    fi
}
