"""The node's view of the chain: typed contract client, wallets, event indexer and the reference model."""
