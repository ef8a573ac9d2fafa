"""One checkpoint's path, as the stages it takes, in order.

1. `dirty`     — which 4 KiB pages the guest wrote (userfaultfd write-protect via `uffd`, or
                 page hashes)
2. `staging`   — copy them out while the guest runs (pre-copy), then the last ones in the pause
3. `frames`    — compress staged pages into self-checking page frames (zstd)
4. `pagemap`   — which version holds each page (full map or delta)
5. `hoststate` — the host's state (VFS, fds, clocks, stdin) as bytes
6. `journal`   — world-reading call results replayed after the checkpoint

`inflate` bounds decompression of anything read back; `transfer` is the one interface a
checkpoint is read (`CheckpointSource`) and written (`CheckpointSink`) through, whatever the
backend: the store, a peer's stream, memory.
"""
