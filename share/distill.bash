# distill.bash - bash completion for distill: command names, each command's options and their
# fixed choices, and file names for everything else. Commands and options are read from the
# binary's own help texts (`distill --help`, `distill help CMD`), so they follow the installed
# version; plain bash (complete -F), no dependency on the bash-completion package. Installed as
# $(PREFIX)/share/bash-completion/completions/distill; without that package, load it from
# ~/.bashrc: source /usr/local/share/bash-completion/completions/distill
_distill_commands() {
    "$1" --help 2>/dev/null | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit } on { print $1 }'
}

# The options of command $2 of binary $1: the long (and short) names its help lists.
_distill_options() {
    "$1" help "$2" 2>/dev/null |
        sed -nE 's/^ {2,6}((-[A-Za-z]), )?(--[a-z][a-z0-9-]*).*/\2 \3/p'
}

# The fixed choices of option $3 ("--dtype f32|f16|bf16|int8" in the help text), if any.
_distill_choices() {
    "$1" help "$2" 2>/dev/null |
        grep -oE -- "$3[ =][a-z0-9_]+(\|[a-z0-9_]+)+" | head -n 1 | sed -E 's/^[^ =]*[ =]//; s/\|/ /g'
}

_distill() {
    local bin=${COMP_WORDS[0]} cur=${COMP_WORDS[COMP_CWORD]} prev= cmd=${COMP_WORDS[1]:-}
    [ "$COMP_CWORD" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD-1]}
    COMPREPLY=()
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "$(_distill_commands "$bin") help --help --version" -- "$cur"))
        return 0
    fi
    if [ "$cmd" = help ]; then
        [ "$COMP_CWORD" -eq 2 ] && COMPREPLY=($(compgen -W "$(_distill_commands "$bin")" -- "$cur"))
        return 0
    fi
    case $prev in
        --*)
            local choices
            choices=$(_distill_choices "$bin" "$cmd" "$prev")
            if [ -n "$choices" ]; then
                COMPREPLY=($(compgen -W "$choices" -- "$cur"))
                return 0
            fi
            case $prev in
                --epochs | --seed | --threads | --batch | --top | --index | --channels | --size | \
                    --name | --set | --metric)
                    return 0 ;;
            esac
            ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_distill_options "$bin" "$cmd")" -- "$cur"))
        return 0
    fi
    # Configs, checkpoints, data files, run folders: file names.
    compopt -o filenames 2>/dev/null
    COMPREPLY=($(compgen -f -- "$cur"))
    return 0
}

complete -F _distill distill
