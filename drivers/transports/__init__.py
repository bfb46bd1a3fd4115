"""Transports move framed bytes to and from an instrument."""
