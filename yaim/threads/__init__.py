"""The daemon's threads, one per role; `daemon` wires them together."""
