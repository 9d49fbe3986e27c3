"""The state store's secrets: generated keys, the PKI, the snapshot key, private directories."""
