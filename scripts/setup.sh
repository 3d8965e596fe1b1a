#!/usr/bin/env bash
# Create .venv (once) and install the project into it. Idempotent and cached: a second
# run with unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
# The JS tests' npm packages (tests/js/package-lock.json: the Vercel AI SDK, and the
# oidc-provider the SSO tests sign in against), again only when the
# lock file changed: `npm ci` starts from an empty node_modules each time.
js_stamp=tests/js/node_modules/.installed-$(sha256sum tests/js/package-lock.json | cut -c1-16)
if [ ! -f "$js_stamp" ]; then
  if command -v npm >/dev/null; then
    npm ci --prefix tests/js --no-audit --no-fund --loglevel=error >/dev/null
    touch "$js_stamp"
  else
    echo "setup.sh: npm not found; the Vercel AI SDK and SSO tests need Node.js and" \
      "'npm ci --prefix tests/js'" >&2
  fi
fi
# SAML signatures are checked by xmlsec1 (pysaml2 runs the binary): Debian's package.
if ! command -v xmlsec1 >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q xmlsec1 >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q xmlsec1 >/dev/null; } \
      || echo "setup.sh: could not install xmlsec1; SAML sign-in (and its tests) need it" >&2
  else
    echo "setup.sh: xmlsec1 not found; SAML sign-in needs it (apt-get install xmlsec1)" >&2
  fi
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first and pinned: unpinned, a dependency would pull a multi-GB CUDA build.
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e '.[dev]'
rm -f .venv/.installed-*
touch "$stamp"
