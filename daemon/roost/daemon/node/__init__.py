"""This roostd as a process on a host: configuration, data directory, metrics, systemd notify."""
