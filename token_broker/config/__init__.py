"""Settings: the contract, the one reader, the bootstrap settings, each service's section, clouds, the store."""
