"""roostd talking to other roostds: who they are, what they may say, and what is sent to them.

`peers` (the Peer gRPC client), `tls` and `peerauth` (who a caller is), `authority` (what a peer
may claim about ownership), replication — `push` (checkpoints pushed to replicas), `receive`
(checkpoints received from owners, stored through the store's sink) and `pushwire` (the push
stream and its bounds) —, `migration` (moving a running execution: the source side) and `handover` (the
ownership hand-off of a migration: PREPARE, COMMIT, ABORT).
"""
