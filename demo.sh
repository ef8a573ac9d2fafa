#!/usr/bin/env bash
# The README's first command: start a local roostd on its embedded defaults, run a real WASI
# program through it with `roost run`, then checkpoint one mid-run, kill -9 its worker and watch
# it finish from the checkpoint with exactly the output of an uninterrupted run; then move one
# running execution, live, to a second local roostd.
set -euo pipefail
cd "$(dirname "$0")"
. tests/env.sh
work=$(mktemp -d)
second=""
trap 'kill $daemon $second 2>/dev/null || true; wait $daemon $second 2>/dev/null || true; rm -rf "$work"' EXIT

echo "== compiling examples/sieve.c to WASI with zig (python -m ziglang cc -target wasm32-wasi)"
python -m ziglang cc -target wasm32-wasi -O2 -o "$work/sieve.wasm" examples/sieve.c
mkdir "$work/data" && echo "demo primes" > "$work/data/label.txt"

echo "== starting roostd on its embedded defaults (127.0.0.1:7070, data in ~/.local/share/roost)"
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
echo "== a second roostd on 127.0.0.1:7071; move a running execution there, live"
roostd --listen 127.0.0.1:7071 --metrics-listen "" --node-id second --data-dir "$work/second" \
  > "$work/second.log" 2>&1 & second=$!
for _ in $(seq 200); do roost --addr 127.0.0.1:7071 ps >/dev/null 2>&1 && break; sleep 0.05; done
id=$(roost run --detach --name demo-moving --mount "$work/data:/data" "$work/sieve.wasm" -- 1500000000)
sleep 1
roost migrate "$id" --to 127.0.0.1:7071
roost wait "$id"          # asked of the first daemon: the CLI follows the execution to the second
roost logs --stdout "$id" | tail -2
roost inspect "$id" | grep -E "state|owner|epoch"
echo "== roost ps -a"
roost ps -a
echo "== stopping both roostds (SIGTERM)"
kill -TERM $daemon $second; wait $daemon || echo "roostd exited with $?"; wait $second || echo "second roostd exited with $?"
