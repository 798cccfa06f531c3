"""PURE core: plain data, the state machines, retry and rate-limit arithmetic. No I/O."""
