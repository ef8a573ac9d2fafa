"""This roostd as a process on a host: configuration, data directory, metrics, systemd notify,
and its `identity` (node id, advertised address) as cluster code sees it."""
