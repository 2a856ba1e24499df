#!/usr/bin/env bash
# Parse "--name value" (or "--name=value") options into shell variables of the same name,
# Kaldi style: source this after declaring the variables with their defaults. A dash in a
# name is read as an underscore; an option whose variable is not declared is an error.
# "--help" prints the declared options when the caller defined $help_message.

while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            echo "${help_message:-no help available}"
            exit 0
            ;;
        --*=*)
            __name=${1%%=*}; __value=${1#*=}; shift
            ;;
        --*)
            __name=$1
            if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
            __value=$2; shift 2
            ;;
        *)
            break
            ;;
    esac
    __name=${__name#--}; __name=${__name//-/_}
    if ! declare -p "$__name" >/dev/null 2>&1; then
        echo "$0: unknown option --$__name (see $0 --help)" >&2
        exit 1
    fi
    printf -v "$__name" '%s' "$__value"
done
unset __name __value
