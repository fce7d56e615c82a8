#!/usr/bin/env bash
# The one entry point for every check, the same on a laptop and in CI, cheapest first:
# set-up of what is missing → fmt → clippy → all test suites.
#
#   ./scripts/test.sh            everything
#   SKIP_LINT=1 ./scripts/test.sh   tests only (while iterating)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s ==\n' "$*"; }

# --- set-up: install what the checks need when it is missing ---------------------------------
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if ! RUSTUP_TOOLCHAIN="$toolchain" rustc --version >/dev/null 2>&1; then
  # A machine whose only toolchain is `stable` at the pinned version: link it under the pinned
  # name instead of downloading (the pinned toolchain may not be downloadable here).
  stable_version=$(RUSTUP_TOOLCHAIN=stable rustc --version 2>/dev/null | awk '{print $2}')
  if [ "$stable_version" = "$toolchain" ]; then
    step "linking the stable toolchain as $toolchain"
    rustup toolchain link "$toolchain" "$(RUSTUP_TOOLCHAIN=stable rustc --print sysroot)"
  else
    step "installing toolchain $toolchain"
    rustup toolchain install "$toolchain" --profile minimal --component rustfmt,clippy
  fi
fi
for component in rustfmt clippy; do
  if ! rustup component list --toolchain "$toolchain" --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add --toolchain "$toolchain" "$component" || true
  fi
done

# A real Vulkan adapter for the GPU tests (crates/gpu): Mesa's lavapipe, a CPU implementation of
# Vulkan. Without an adapter those tests fail when CI is set.
if [ ! -f /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] && command -v apt-get >/dev/null 2>&1; then
  step "installing Mesa lavapipe (software Vulkan) for the GPU tests"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y mesa-vulkan-drivers
fi

# A real English corpus for the language-model tests (crates/gpu/tests/language_model.rs): the
# quotations of Debian's fortunes package, read from /usr/share/games/fortunes.
if [ ! -d /usr/share/games/fortunes ] && command -v apt-get >/dev/null 2>&1; then
  step "installing Debian's fortunes (the text corpus of the language-model tests)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y fortunes
fi

# The Prometheus server, for the test that scrapes a devnet (crates/node/tests/prometheus.rs).
if ! command -v prometheus >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  step "installing Prometheus for the metrics test"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus
fi

# Headless Chromium, for the explorer test (crates/node/tests/explorer.rs).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  step "installing Chromium for the explorer test"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

# --- checks ----------------------------------------------------------------------------------
if [ -z "${SKIP_LINT:-}" ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy --all-targets -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "cargo test (unit, scenarios, properties, simulations, recovery)"
cargo test --workspace --all-targets --locked

step "doc tests"
cargo test --workspace --doc --locked

# The economics example on the real contracts: no attack it stages pays its attacker. (The tests
# above build examples as test harnesses; `cargo run` builds the program itself.)
step "economics: every attack unprofitable"
target_dir=${CARGO_TARGET_DIR:-target}
cargo run -q --locked -p trainmesh-contracts --example economics -- --days 2 | tail -n 1 \
  > "$target_dir/economics-last.json"
python3 - "$target_dir/economics-last.json" <<'PY'
import json, sys
attacks = json.load(open(sys.argv[1]))["attacks"]
for a in attacks:
    print("  %s: profit %s TRAIN" % (a["attack"], a["profit_train"]))
    assert a["profit_train"] <= 0, a
assert {a["attack"] for a in attacks} >= {"emission_farming", "slot_squatting", "spam"}, attacks
PY

# The Python SDK (sdk/python): its shared vectors, and a devnet driven through the gateway with the
# binary the cargo tests built.
venv="$target_dir/sdk-venv"
if [ ! -x "$venv/bin/pytest" ]; then
  step "creating the Python SDK's venv at $venv"
  if ! python3 -c 'import ensurepip' >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
  fi
  python3 -m venv "$venv"
fi
# Every run: the SDK's dependencies may have changed (quick when everything is there already).
"$venv/bin/pip" install --quiet --disable-pip-version-check './sdk/python[test]'
step "python sdk tests"
TRAINMESH_BIN="$target_dir/debug/trainmesh" "$venv/bin/pytest" -q sdk/python/tests

echo
echo "all checks passed"
