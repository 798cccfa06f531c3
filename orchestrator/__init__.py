"""compliance-orchestrator: X API v2 batch compliance, from an inbox folder to an outbox."""

# The one place the version lives (semver; hatch reads it for the wheel, `--version` prints
# it). Bump with an entry in CHANGELOG.md: MAJOR for a change an operator must act on that
# an upgrade cannot carry (a migration without a way back, a removed config key), MINOR for
# new behaviour or config keys, PATCH for fixes.
__version__ = "0.2.0"
