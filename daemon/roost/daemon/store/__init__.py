"""roostd's durable state: one LMDB environment per data directory.

`db` (the environment, its sub-databases and sealed values), `records` (the execution record),
`checkpoints` (page versions, maps and their garbage collection).
"""
