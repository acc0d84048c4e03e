"""Microsoft's own SDKs as oracles: what they send for an operation, captured offline, in a process of their own."""
