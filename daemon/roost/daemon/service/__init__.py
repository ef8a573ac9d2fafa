"""The gRPC front doors of roostd: Control (CLI and client code) and Peer (other roostds).

Owns request checking (`fields`), long-poll admission (`longpolls`), the Control Unix socket
(`controlsocket`), what both servicers share (`rpc`: errors to status codes, tolerant request
parsing, handler tables), the two servicers (`control`, `peer`) and the checkpoint inspection
behind `roost debug` (`debug`). Servicers translate requests into calls on `executions`,
`modules` and `cluster`, and `RoostError`s into gRPC status codes; they hold no state of their
own.
"""
