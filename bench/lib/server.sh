# Sourced by bench scripts: starts a server pinned to CPU 0 on a free port
# of 127.0.0.1 and waits until it listens, instead of sleeping and hoping.
#
#   start_server LOG SPEC [SERVE-ARGS...]
#
# SPEC is "BIN [ARGS...]" (one shell word). A BIN whose file name starts
# with `peer-` (bench/peers) runs as `BIN --addr A --threads 1 ARGS`, any
# other as `BIN serve --addr A --shards 1 SERVE-ARGS ARGS` (a ringport
# build). Sets `server` (its pid) and `port`. The server's output goes to
# LOG. A port taken between the check and the bind (the server exits saying
# "in use") is retried with another; a server that exits for any other
# reason, or does not listen within 30 s, ends the script with its output.

listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# Prints why the server failed and its output, then exits 1.
server_failed() { # LOG MESSAGE
    echo "${0##*/}: $2" >&2
    sed 's/^/  server: /' "$1" >&2
    exit 1
}

start_server() { # LOG SPEC [SERVE-ARGS...]
    local log=$1 spec=$2 attempt bin
    shift 2
    local words
    read -r -a words <<<"$spec"
    bin=${words[0]}
    local args=("${words[@]:1}")
    for attempt in 1 2 3 4 5; do
        port=$((30000 + RANDOM % 10000))
        listening "$port" && continue
        if [[ $(basename "$bin") == peer-* ]]; then
            taskset -c 0 "$bin" --addr "127.0.0.1:$port" --threads 1 "${args[@]}" >"$log" 2>&1 &
        else
            taskset -c 0 "$bin" serve --addr "127.0.0.1:$port" --shards 1 "$@" "${args[@]}" >"$log" 2>&1 &
        fi
        server=$!
        for _ in $(seq 300); do
            listening "$port" && return 0
            kill -0 "$server" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$server" 2>/dev/null &&
            server_failed "$log" "$spec does not listen on 127.0.0.1:$port after 30 s"
        wait "$server" 2>/dev/null || true
        server=""
        grep -qi "in use" "$log" || server_failed "$log" "$spec exited before listening (attempt $attempt)"
    done
    server_failed "$log" "$spec: every port tried was in use"
}
