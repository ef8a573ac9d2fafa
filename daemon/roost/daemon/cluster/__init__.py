"""roostd talking to other roostds: who they are, what they may say, and what is sent to them.

`peers` (the Peer gRPC client), `tls` and `peerauth` (who a caller is), `authority` (what a peer
may claim about ownership), `replication` (checkpoints pushed to replicas and received from
owners), `migration` (moving a running execution: the source side) and `handover` (the
ownership hand-off of a migration: PREPARE, COMMIT, ABORT).
"""
