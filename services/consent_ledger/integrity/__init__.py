"""The ledger's integrity, pure: Merkle logs, entry encoding, signed checkpoints, proofs, sealing, keys."""
