"""The operational audit log (append-only, hash-chained, Merkle-checkpointed) and signers."""
