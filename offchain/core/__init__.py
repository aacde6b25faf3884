"""Chain-independent primitives shared by the off-chain tools."""
