"""roostd's side of running executions: one worker process each, supervised.

`supervisor` (lifecycle, recovery, the client's queries), `running` (the state of one execution
whose worker is alive), `pool` (worker processes, warm spares) and `timers` (durable sleeps that
wake suspended executions).
"""
