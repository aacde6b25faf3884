"""FrameLedger off-chain tooling."""
