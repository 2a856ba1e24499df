#!/usr/bin/env bash
# run_jobs [--done <marker pattern with JOB>] <nj> <log pattern with JOB> <command...with JOB>
# Run nj copies of a command in parallel, JOB replaced by 1..nj in the command and the log
# name; fail (naming the logs) if any copy fails. Source this file to get the function.
# With --done, a copy that exits 0 then writes its marker file, and a copy whose marker exists
# is not run again (its log stays as it is): a rerun after a failure or a kill runs only the
# copies that did not finish.

run_jobs() {
    local done_pattern=
    if [ "$1" = --done ]; then
        done_pattern=$2
        shift 2
    fi
    local nj=$1 log=$2
    shift 2
    local pids=() ran=() n marker
    for n in $(seq 1 "$nj"); do
        marker=
        if [ -n "${done_pattern}" ]; then
            marker=${done_pattern//JOB/$n}
            [ ! -e "${marker}" ] || continue
            mkdir -p "$(dirname "${marker}")"
        fi
        mkdir -p "$(dirname "${log//JOB/$n}")"
        # The marker is written only after the copy has exited 0: its output is complete.
        ( "${@//JOB/$n}" && { [ -z "${marker}" ] || touch "${marker}"; } ) > "${log//JOB/$n}" 2>&1 &
        pids+=($!)
        ran+=("$n")
    done
    local failed=() i
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || failed+=("${log//JOB/${ran[$i]}}")
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
