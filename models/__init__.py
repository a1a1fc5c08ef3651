"""Lowest layer: settings, tables, domain events and the database helpers every package shares."""
