"""The worker process: one guest in a wasmtime Store, run under roost's own WASI.

`worker` (the process's entry point and its loops), `engine` (wasmtime configuration), `capture`
(asyncify unwind and rewind of the guest's stack), `wasi/` (WASI preview1 with all state as plain
data) and `vfs` (the in-memory filesystem). The only package that runs guest code.
"""
