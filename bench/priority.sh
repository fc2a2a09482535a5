# Sourced by the benchmark scripts: run the benchmark ahead of other work on the machine.
#
# NICE [-10 as root, else 0] is the niceness to run the measured processes at (prefix their
# command with `$NICE_CMD`). With autogroup scheduling (Linux's default on desktops and many
# VMs), niceness only counts inside a session's group, and each group gets an equal share, so
# `raise_priority` also raises this session's group; `restore_priority` (call it from the
# script's EXIT trap) puts the group back.
NICE=${NICE:-$([[ $EUID == 0 ]] && echo -10 || echo 0)}
NICE_CMD=()
if [[ $NICE != 0 ]]; then NICE_CMD=(nice -n "$NICE"); fi
AUTOGROUP_NICE=""

raise_priority() {
    if [[ $NICE != 0 && -w /proc/$$/autogroup ]]; then
        local previous
        previous=$(awk '{print $NF}' "/proc/$$/autogroup")
        if echo "$NICE" > "/proc/$$/autogroup" 2>/dev/null; then AUTOGROUP_NICE=$previous; fi
    fi
}

restore_priority() {
    if [[ -n $AUTOGROUP_NICE ]]; then echo "$AUTOGROUP_NICE" > "/proc/$$/autogroup" 2>/dev/null || true; fi
}
