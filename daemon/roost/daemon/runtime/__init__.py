"""The worker process: one guest in a wasmtime Store, run under roost's own WASI.

`worker` (the process's entry point and its loops), `guest` (the instance: instantiate, restore,
standby apply/go, throttle, run), `checkpointer` (a checkpoint's request, pre-copy, pause and
background write, in that order), `sinks` (output and journal records to the supervisor),
`engine` (wasmtime configuration), `capture` (asyncify unwind and rewind of the guest's stack),
`wasi/` (WASI preview1 with all state as plain data), `vfs` (the in-memory filesystem) and
`vfsimage` (its saved form and bytes). The
only package that runs guest code.
"""
