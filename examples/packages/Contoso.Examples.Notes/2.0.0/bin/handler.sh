#!/bin/sh
# Contoso.Examples.Notes: keeps a note, taken from its settings, in its handler directory.
#
# Usage: bin/handler.sh install|enable|disable|update|uninstall
# Every operation logs one line to stdout. enable writes the public setting "note" (empty
# when not given) to notes.txt in the handler directory and reports success in
# status/<seq>.status.
set -eu

handler_name="Contoso.Examples.Notes"
handler_version="2.0.0"

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

# Replace a file's content in one step: write a temporary file, then rename it.
write_file() {
    printf '%s\n' "$2" >"$1.tmp"
    mv -f "$1.tmp" "$1"
}

write_status() {
    mkdir -p "$here/status"
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    write_file "$here/status/$seq.status" "$(printf '[{"version": 1.0, "timestampUTC": "%s", "status": {"name": "%s", "operation": "Enable", "configurationAppliedTime": "%s", "status": "%s", "code": 0, "formattedMessage": {"lang": "en-US", "message": "%s"}}}]' \
        "$now" "$handler_name" "$now" "$1" "$2")"
}

case "$operation" in
enable)
    note=$(setting note)
    log "enable (sequence number $seq)"
    write_file "$here/notes.txt" "$note"
    if [ -n "$note" ]; then
        message="Hello from $handler_name $handler_version: saved the note to notes.txt"
    else
        message="Hello from $handler_name $handler_version: no note given, notes.txt is empty"
    fi
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
