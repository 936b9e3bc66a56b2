"""Persistence adapters: SQLite state store and content-addressed blob store."""
