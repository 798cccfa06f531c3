"""Operator commands: one module per command; they parse, call the daemon and store, print."""

from orchestrator.cli.main import main

__all__ = ["main"]
