"""Async instrument drivers: role interfaces, transports and one module per instrument family."""
