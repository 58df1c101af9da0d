# Shared by bench/*.sh (sourced, not run): tool checks and the bench/.venv with the Python
# packages a comparison needs. Callers set BENCH_NAME first; `fail` exits 127 naming it.

VENV=bench/.venv

fail() {
    echo "$BENCH_NAME: $*" >&2
    exit 127
}

# ensure_venv IMPORTS PACKAGES...: makes bench/.venv if needed and pip-installs PACKAGES
# unless `python -c "import IMPORTS"` already works.
ensure_venv() {
    local imports=$1
    shift
    command -v cargo >/dev/null || fail "cargo not found: install Rust (https://rustup.rs)"
    command -v python3 >/dev/null || fail "python3 not found: install Python 3.8 or later"
    python3 -c 'import venv, ensurepip' 2>/dev/null ||
        fail "python3 cannot make a venv (Debian/Ubuntu: apt-get install python3-venv)"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV" || fail "python3 -m venv $VENV failed"
    fi
    if ! "$VENV/bin/python" -c "import $imports" 2>/dev/null; then
        echo "installing $* into $VENV ..." >&2
        "$VENV/bin/python" -m pip install --quiet "$@" ||
            fail "pip install $* failed (is PyPI reachable?)"
    fi
}
