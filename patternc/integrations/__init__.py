"""Integrations with other libraries (imported on demand: patternc does not depend on them)."""
