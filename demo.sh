#!/usr/bin/env bash
# The README's first command: start a local roostd on its embedded defaults, run a real WASI
# program through it with `roost run`, then checkpoint one mid-run, kill -9 its worker and watch
# it finish from the checkpoint with exactly the output of an uninterrupted run; then move one
# running execution, live, to a second local roostd; then three roostds on one etcd, a running
# execution's host killed (roostd and its workers, kill -9), and the execution finishing on
# another member with its output intact.
set -euo pipefail
cd "$(dirname "$0")"
. tests/env.sh
work=$(mktemp -d)
first=""; second=""; etcd_pid=""; members=""
trap 'kill $daemon $first $second $etcd_pid $members 2>/dev/null || true; wait $daemon $first $second $etcd_pid $members 2>/dev/null || true; rm -rf "$work"' EXIT

echo "== compiling examples/sieve.c to WASI with zig (python -m ziglang cc -target wasm32-wasi)"
python -m ziglang cc -target wasm32-wasi -O2 -o "$work/sieve.wasm" examples/sieve.c
mkdir "$work/data" && echo "demo primes" > "$work/data/label.txt"

echo "== starting roostd on its embedded defaults (Control on the Unix socket /run/roost/roostd.sock"
echo "   for root, else \$XDG_RUNTIME_DIR/roost/roostd.sock; no TCP port; data in ~/.local/share/roost)"
roostd > "$work/roostd.log" 2>&1 & daemon=$!
for _ in $(seq 200); do roost ps >/dev/null 2>&1 && break; sleep 0.05; done
# Names are unique: a previous demo's executions go first (by id: a store from before names
# were unique may hold several of one name).
roost ps -a --json | python -c 'import json,sys; print(*[e["id"] for e in json.load(sys.stdin)
    if e.get("name") in ("demo-sieve", "demo-durable", "demo-moving")])' | xargs -r roost rm --force >/dev/null

echo "== roost run --mount $work/data:/data sieve.wasm -- 150000000   (uploads it; it is prepared for"
echo "   checkpoints in the background, and a first run does not wait for that long)"
roost run --name demo-sieve --mount "$work/data:/data" "$work/sieve.wasm" -- 150000000
id=demo-sieve                                         # (a name goes wherever an id does)
echo "== roost cp $id:/data/result.txt"
roost cp "$id:/data/result.txt" "$work/result.txt" && cat "$work/result.txt"

echo "== again, detached: checkpoint it mid-run, then kill -9 its worker (roost modules prepare: wait"
echo "   until it is prepared, as a run before then cannot be checkpointed)"
roost modules prepare "$work/sieve.wasm" >/dev/null
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
roost modules prepare "$work/sieve.wasm" >/dev/null
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

if ! command -v etcd >/dev/null 2>&1; then
  echo "== etcd is not installed here (Debian: apt-get install etcd-server); skipping the failover part"
  exit 0
fi
echo "== three roostds on one etcd (127.0.0.1:2389): each holds a lease; an execution's replica"
echo "   holds its output and journal before a client sees them (replication.ack = one)"
etcd --name demo --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:2389 \
  --advertise-client-urls http://127.0.0.1:2389 --listen-peer-urls http://127.0.0.1:2390 \
  --initial-advertise-peer-urls http://127.0.0.1:2390 --initial-cluster demo=http://127.0.0.1:2390 \
  > "$work/etcd.log" 2>&1 & etcd_pid=$!
for _ in $(seq 200); do
  python -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:2389/v3/maintenance/status', b'{}'), timeout=1)" 2>/dev/null && break
  sleep 0.1
done
pids=()
for n in 1 2 3; do
  roostd --listen 127.0.0.1:708$n --etcd http://127.0.0.1:2389 --control-socket "" --metrics-listen "" \
    --node-id n$n --data-dir "$work/n$n" > "$work/n$n.log" 2>&1 & pids+=($!)
done
members="${pids[*]}"
for n in 1 2 3; do
  for _ in $(seq 200); do roost --addr 127.0.0.1:708$n ps >/dev/null 2>&1 && break; sleep 0.05; done
done
roost --addr 127.0.0.1:7081 nodes
echo "== an uninterrupted run on n3, for comparison"
roost --addr 127.0.0.1:7083 run --mount "$work/data:/data" "$work/sieve.wasm" -- 600000000 > "$work/plain.out"
echo "== the same on n1, detached; a client follows it through n2; then n1's host dies"
id=$(roost --addr 127.0.0.1:7081 run --detach --name demo-failover --mount "$work/data:/data" "$work/sieve.wasm" -- 600000000)
roost --addr 127.0.0.1:7082 logs -f "$id" > "$work/followed.out" & follower=$!
sleep 1.5
n1=${pids[0]}
pkill -9 -P "$n1" || true; kill -9 "$n1"; wait "$n1" 2>/dev/null || true
echo "killed n1's roostd ($n1) and its workers"
wait "$follower"
roost --addr 127.0.0.1:7082 inspect "$id" | grep -E "state|owner|epoch|notes" || true
if cmp -s "$work/plain.out" "$work/followed.out"; then
  echo "== the follower's output is byte-identical to the uninterrupted run ($(wc -c < "$work/followed.out") bytes):"
  tail -2 "$work/followed.out"
else
  echo "== OUTPUT DIFFERS from the uninterrupted run"; diff "$work/plain.out" "$work/followed.out" | head; exit 1
fi
kill -TERM ${pids[1]} ${pids[2]} 2>/dev/null; wait ${pids[1]} ${pids[2]} 2>/dev/null || true
