"""Development tools: protocol emulators and the local dev server. Never deployed."""
