"""Who is calling: the Caller value, each CALLER_AUTH mode, authorization and rate limits."""
