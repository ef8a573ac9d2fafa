#!/usr/bin/env bash
# The README's first command: start a local roostd on its embedded defaults, run a real WASI
# program through it with `roost run`, then checkpoint one mid-run, kill -9 its worker and watch
# it finish from the checkpoint with exactly the output of an uninterrupted run; then move one
# running execution, live, to a second local roostd.
set -euo pipefail
cd "$(dirname "$0")"
. tests/env.sh
work=$(mktemp -d)
first=""; second=""
trap 'kill $daemon $first $second 2>/dev/null || true; wait $daemon $first $second 2>/dev/null || true; rm -rf "$work"' EXIT

echo "== compiling examples/sieve.c to WASI with zig (python -m ziglang cc -target wasm32-wasi)"
python -m ziglang cc -target wasm32-wasi -O2 -o "$work/sieve.wasm" examples/sieve.c
mkdir "$work/data" && echo "demo primes" > "$work/data/label.txt"

echo "== starting roostd on its embedded defaults (Control on the Unix socket /run/roost/roostd.sock"
echo "   for root, else \$XDG_RUNTIME_DIR/roost/roostd.sock; no TCP port; data in ~/.local/share/roost)"
roostd > "$work/roostd.log" 2>&1 & daemon=$!
for _ in $(seq 200); do roost ps >/dev/null 2>&1 && break; sleep 0.05; done

echo "== roost run --mount $work/data:/data sieve.wasm -- 150000000   (uploads and prepares it once)"
roost run --name demo-sieve --mount "$work/data:/data" "$work/sieve.wasm" -- 150000000
id=$(roost ps -a --json | python -c 'import json,sys; print([e["id"] for e in json.load(sys.stdin) if e.get("name")=="demo-sieve"][-1])')
echo "== roost cp $id:/data/result.txt"
roost cp "$id:/data/result.txt" "$work/result.txt" && cat "$work/result.txt"

echo "== again, detached: checkpoint it mid-run, then kill -9 its worker"
id=$(roost run --detach --name demo-durable --mount "$work/data:/data" "$work/sieve.wasm" -- 1500000000)
sleep 1
roost checkpoint "$id"
pid=$(roost inspect --json "$id" | python -c 'import json,sys; print(json.load(sys.stdin)["worker_pid"])')
kill -9 "$pid" && echo "killed worker $pid"
roost wait "$id"
roost logs --stdout "$id" | tail -3
roost inspect "$id" | grep -E "state|checkpoints|restores|journal"
echo "== two roostds that are each other's peers on TCP (127.0.0.1:7071 and :7072); move a running"
echo "   execution from the first to the second, live"
roostd --listen 127.0.0.1:7071 --peer 127.0.0.1:7072 --control-socket "" --metrics-listen "" \
  --node-id first --data-dir "$work/first" > "$work/first.log" 2>&1 & first=$!
roostd --listen 127.0.0.1:7072 --peer 127.0.0.1:7071 --control-socket "" --metrics-listen "" \
  --node-id second --data-dir "$work/second" > "$work/second.log" 2>&1 & second=$!
for port in 7071 7072; do
  for _ in $(seq 200); do roost --addr 127.0.0.1:$port ps >/dev/null 2>&1 && break; sleep 0.05; done
done
export ROOST_ADDR=127.0.0.1:7071
id=$(roost run --detach --name demo-moving --mount "$work/data:/data" "$work/sieve.wasm" -- 1500000000)
sleep 1
roost migrate "$id" --to 127.0.0.1:7072
roost wait "$id"          # asked of the first daemon: the CLI follows the execution to the second
roost logs --stdout "$id" | tail -2
roost inspect "$id" | grep -E "state|owner|epoch"
unset ROOST_ADDR
echo "== roost ps -a"
roost ps -a
echo "== stopping the three roostds (SIGTERM)"
kill -TERM $daemon $first $second; wait $daemon || echo "roostd exited with $?"
wait $first || echo "first roostd exited with $?"; wait $second || echo "second roostd exited with $?"
