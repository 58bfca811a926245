"""First-party moebench plugins."""
