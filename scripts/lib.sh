# Sourced by the check and generator scripts: pinned tool installs and a throwaway `nekton serve`.
# Every function fails with a message naming what is missing or what went wrong.

# ensure_venv VENV REQUIREMENTS: a Python venv at VENV with exactly REQUIREMENTS installed
# (reinstalled when the file changes; a no-op otherwise).
ensure_venv() {
    local venv=$1 req=$2
    if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/requirements.txt"; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
        cp "$req" "$venv/requirements.txt"
    fi
}

# ensure_npm DIR: DIR/node_modules holds exactly what DIR/package-lock.json pins (`npm ci`, no
# install scripts; a no-op while the lockfile is unchanged).
ensure_npm() {
    local dir=$1
    if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.nekton-installed-lock" 2>/dev/null; then
        (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
        cp "$dir/package-lock.json" "$dir/node_modules/.nekton-installed-lock"
    fi
}

# build_nekton: builds this checkout's `nekton` (a no-op when it is current) and sets NEKTON_BIN.
build_nekton() {
    cargo build -q -p nekton --locked
    NEKTON_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/nekton"
}

# start_serve WHO STATE_DIR [SERVE_ARGS...]: a fresh `nekton serve` of NEKTON_BIN on a free
# 127.0.0.1 port, its state in STATE_DIR (created, mode 0755 so PostgreSQL's account reaches it)
# and its output in STATE_DIR/serve.log, with no bridge networking and image pulls limited to the
# registry 127.0.0.1:1 (anything else is refused before a connection); waits until it is ready
# and has written its admin token. Sets SERVE_PID, SERVE_PORT, SERVE_URL and SERVE_TOKEN. WHO
# names the caller in messages. Stop it with stop_serve (e.g. from the caller's EXIT trap).
start_serve() {
    local who=$1 state=$2
    shift 2
    mkdir -p "$state"
    chmod 0755 "$state"
    SERVE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    SERVE_URL="http://127.0.0.1:$SERVE_PORT"
    "$NEKTON_BIN" serve --listen "127.0.0.1:$SERVE_PORT" --state-dir "$state" --no-bridge-network \
        --allowed-registry 127.0.0.1:1 "$@" >"$state/serve.log" 2>&1 &
    SERVE_PID=$!
    local _
    for _ in $(seq 1 300); do
        if curl -fsS "$SERVE_URL/readyz" >/dev/null 2>&1 && [ -s "$state/admin.token" ]; then
            SERVE_TOKEN=$(cat "$state/admin.token")
            return 0
        fi
        kill -0 "$SERVE_PID" 2>/dev/null || { cat "$state/serve.log" >&2; echo "$who: nekton serve exited" >&2; return 1; }
        sleep 0.2
    done
    tail -30 "$state/serve.log" >&2
    echo "$who: nekton serve was not ready with an admin token after 60 s" >&2
    return 1
}

# stop_serve: stops the server start_serve started (if any) and waits for it.
stop_serve() {
    if [ -n "${SERVE_PID:-}" ]; then
        kill "$SERVE_PID" 2>/dev/null || true
        wait "$SERVE_PID" 2>/dev/null || true
        SERVE_PID=
    fi
}
