"""The shared tier on Redis: connection, circuit breaker, encryption, L2 cache, cross-instance locks, counters."""
