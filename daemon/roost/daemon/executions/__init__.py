"""roostd's side of running executions: one worker process each, supervised.

The pipeline, one module per part:

    launcher    a worker for an execution: restore point, START, the pump that follows
    pump        a worker's frames, read as `link.messages`, dispatched by kind to
      output      the output writer: guest output and journal records, durable in bursts
      committer   the checkpoint committer: streamed page parts, the commit, `on_commit`
    ending      the worker's end: the outcome recorded, or a crash recovered
    requests    checkpoint requests to a worker and the answers its checkpoints bring
    standbys    workers of live migrations coming here (the target's side)
    source      migrations leaving: stop, give up, release, take back (the source's side)
    supervisor  composes the parts; lifecycle (start, recover, shutdown) and client queries
    watch       a client waiting for an execution's end or following its output

and what they share: `lives` (the executions with a running worker, which are this daemon's),
`running` (one execution whose worker is alive), `pool` (worker processes, warm spares) and
`timers` (durable sleeps that wake suspended executions).
"""
