#!/usr/bin/env bash
# A multi-process trainmesh testnet on loopback: every node is its own `trainmesh node` process.
#
#   testnet.sh init DIR [VALIDATORS] [TRAINERS] [EVALUATORS]   keys, genesis, one config per node
#   testnet.sh start DIR                                        start every node (pids in DIR/pids)
#   testnet.sh submit DIR                                       once every worker is registered,
#                                                               submit the demo job; wait for it
#   testnet.sh stop DIR                                         stop every node
#   testnet.sh run DIR [VALIDATORS] [TRAINERS] [EVALUATORS]     all of the above
#
# TRAINMESH points at the binary (default: target/release/trainmesh, else `trainmesh` on PATH).
# BASE_PORT sets the first port (default: random in 20000-31999). Logs: DIR/<node>/node.log.
set -euo pipefail

bin="${TRAINMESH:-}"
if [[ -z "$bin" ]]; then
  here="$(cd "$(dirname "$0")/../.." && pwd)"
  if [[ -x "$here/target/release/trainmesh" ]]; then bin="$here/target/release/trainmesh"; else bin=trainmesh; fi
fi

die() { echo "testnet: $*" >&2; exit 1; }

peer_of() { sed -n 's/.*"peer_id":"\([^"]*\)".*/\1/p' "$1"; }

init() {
  local dir=$1 nv=${2:-4} nt=${3:-2} ne=${4:-2}
  (( nv >= 4 )) || die "at least 4 validators"
  (( ne >= 2 )) || die "at least 2 evaluators (the attestation quorum)"
  mkdir -p "$dir/keys"
  # Below Linux's ephemeral range (32768+), so that no outgoing connection of this or any other
  # process can hold a port a node of this testnet is about to listen on.
  local port=${BASE_PORT:-$(( 20000 + RANDOM % 12000 ))}
  local validators=() accounts=() bootstrap=()
  for ((i = 0; i < nv; i++)); do
    "$bin" keys new --out "$dir/keys/validator-$i.account" > "$dir/keys/validator-$i.account.json"
    "$bin" keys new --out "$dir/keys/validator-$i.consensus" > "$dir/keys/validator-$i.consensus.json"
    validators+=(--validator "$dir/keys/validator-$i.account:$dir/keys/validator-$i.consensus:100000")
    bootstrap+=("\"/ip4/127.0.0.1/tcp/$((port + i))/p2p/$(peer_of "$dir/keys/validator-$i.consensus.json")\"")
  done
  local workers=()
  for ((i = 0; i < nt; i++)); do workers+=("trainer-$i"); done
  for ((i = 0; i < ne; i++)); do workers+=("evaluator-$i"); done
  workers+=(provider researcher)
  for w in "${workers[@]}"; do
    "$bin" keys new --out "$dir/keys/$w.key" > "$dir/keys/$w.json"
    accounts+=(--account "$dir/keys/$w.key:10000")
  done
  "$bin" genesis new --chain-id trainmesh-testnet --unit-timeout-ms 60000 \
    "${validators[@]}" "${accounts[@]}" --beacon-out "$dir/keys" --out "$dir/genesis.json" > /dev/null
  local boot
  boot=$(IFS=,; echo "${bootstrap[*]}")
  local n=0
  write() { # name port account [extra toml]
    mkdir -p "$dir/$1"
    {
      echo "name = \"$1\""
      echo "data_dir = \"data\""
      echo "genesis = \"../genesis.json\""
      echo "listen = \"/ip4/127.0.0.1/tcp/$2\""
      echo "account_key = \"$3\""
      echo "bootstrap = [$boot]"
      printf '%b' "${4:-}"
    } > "$dir/$1/node.toml"
  }
  for ((i = 0; i < nv; i++)); do
    write "validator-$i" $((port + i)) "../keys/validator-$i.account" \
      "consensus_key = \"../keys/validator-$i.consensus\"\nbeacon_key = \"../keys/beacon-$i.key\"\n"
  done
  n=$nv
  for ((i = 0; i < nt; i++)); do
    write "trainer-$i" $((port + n)) "../keys/trainer-$i.key" "[trainer]\nbond = 200\n"; n=$((n + 1))
  done
  for ((i = 0; i < ne; i++)); do
    write "evaluator-$i" $((port + n)) "../keys/evaluator-$i.key" "[evaluator]\nbond = 200\n"; n=$((n + 1))
  done
  write provider $((port + n)) "../keys/provider.key" "[provider]\ndataset = \"digits\"\n"
  echo "$boot" > "$dir/bootstrap"
  echo "testnet in $dir: $nv validators, $nt trainers, $ne evaluators, 1 provider (ports from $port)"
}

start_node() { # dir name
  local dir=$1 name=$2
  ( cd "$dir/$name" && exec "$bin" node --config node.toml >> node.log 2>&1 ) &
  echo "$name $!" >> "$dir/pids"
}

start() {
  local dir=$1
  : > "$dir/pids"
  for cfg in "$dir"/*/node.toml; do start_node "$dir" "$(basename "$(dirname "$cfg")")"; done
}

submit() { # waits until every trainer and evaluator of DIR is registered, then submits
  local dir=$1 args=() workers
  IFS=, read -ra peers < "$dir/bootstrap"
  for p in "${peers[@]}"; do args+=(--bootstrap "${p//\"/}"); done
  workers=$(cat "$dir"/*/node.toml | grep -cE '^\[(trainer|evaluator)\]' || true)
  "$bin" job submit --genesis "$dir/genesis.json" --key "$dir/keys/researcher.key" "${args[@]}" \
    --workers "$workers" --wait
}

stop() {
  local dir=$1
  [[ -f "$dir/pids" ]] || return 0
  while read -r _ pid; do kill "$pid" 2>/dev/null || true; done < "$dir/pids"
  : > "$dir/pids"
}

cmd=${1:-}; shift || true
case "$cmd" in
  init) init "$@" ;;
  start) start "$@" ;;
  submit) submit "$@" ;;
  stop) stop "$@" ;;
  run)
    dir=$1
    init "$@"
    trap 'stop "$dir"' EXIT
    start "$dir"
    submit "$dir"
    ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
