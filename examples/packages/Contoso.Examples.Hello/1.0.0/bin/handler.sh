#!/bin/sh
# Contoso.Examples.Hello: the smallest useful extension handler, in POSIX sh.
#
# Usage: bin/handler.sh install|enable|disable|update|uninstall
# Every operation logs one line to stdout (the agent keeps it). enable greets with the
# public setting "greeting", when given, and reports success in status/<seq>.status.
set -eu

handler_name="Contoso.Examples.Hello"
handler_version="1.0.0"

here=${AZURE_GUEST_AGENT_EXTENSION_PATH:-$(cd "$(dirname "$0")/.." && pwd)}
seq=${ConfigSequenceNumber:-0}
operation=${1:-}

log() {
    printf '%s %s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$handler_name" "$handler_version" "$*"
}

# The value of a string public setting, read from the settings file with sed (no jq).
# Values holding quotes or backslashes are not supported by this example.
setting() {
    settings="$here/config/$seq.settings"
    [ -s "$settings" ] || return 0
    sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\\([^\"\\\\]*\\)\".*/\\1/p" "$settings" | head -n 1
}

# Write a terminal status for this sequence number: to a temporary file, then renamed,
# so that the agent never reads half a file.
write_status() {
    mkdir -p "$here/status"
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    tmp="$here/status/$seq.status.tmp"
    printf '[{"version": 1.0, "timestampUTC": "%s", "status": {"name": "%s", "operation": "Enable", "configurationAppliedTime": "%s", "status": "%s", "code": 0, "formattedMessage": {"lang": "en-US", "message": "%s"}}}]\n' \
        "$now" "$handler_name" "$now" "$1" "$2" >"$tmp"
    mv -f "$tmp" "$here/status/$seq.status"
}

case "$operation" in
enable)
    message="Hello from $handler_name $handler_version"
    greeting=$(setting greeting)
    if [ -n "$greeting" ]; then
        message="$message: $greeting"
    fi
    log "enable (sequence number $seq)"
    echo "$message"
    write_status success "$message"
    ;;
install | disable | uninstall)
    log "$operation"
    ;;
update)
    log "update from ${AZURE_GUEST_AGENT_UPDATING_FROM_VERSION:-unknown} to ${VERSION:-$handler_version}"
    ;;
*)
    echo "usage: $0 install|enable|disable|update|uninstall" >&2
    exit 2
    ;;
esac
