"""compliance-orchestrator: X API v2 batch compliance, from an inbox folder to an outbox."""

__version__ = "0.1.0"
