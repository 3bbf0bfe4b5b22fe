"""Local EVM devnet (anvil) management and contract deployment."""
