"""roostd: the per-host daemon that runs WASI programs as durable executions."""
