"""labctl: unattended solid-state battery tests — protocols, engine, journal and CLI."""

__version__ = "0.1.0"
