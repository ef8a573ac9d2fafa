"""roostd's durable state: one LMDB environment per data directory.

`db` (the environment, its sub-databases and sealed values), `keys` (every key's layout and the
prefix scan), `records` (the execution record, handover owners), `checkpoints` (page versions,
maps and their garbage collection: the LMDB source and sink of `checkpoint.transfer`).
"""
