"""Below everyone: typed errors, the single-flight cache, the bounded map, log redaction."""
