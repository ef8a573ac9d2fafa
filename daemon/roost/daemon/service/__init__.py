"""The gRPC front doors of roostd: Control (CLI and client code) and Peer (other roostds).

Owns request checking (`fields`), long-poll admission (`longpolls`), the Control Unix socket
(`controlsocket`) and the two servicers (`control`, `peer`). Servicers translate requests into
calls on `executions`, `modules` and `cluster`, and `RoostError`s into gRPC status codes; they
hold no state of their own.
"""
