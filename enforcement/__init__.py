"""Enforcement: the pure decision core (`decide`), its rules and plate lists.

`decide(state, event, now, ctx)` turns one domain event into a new `BayState` and a list of
actions; the service that persists state and applies actions lives beside it and is the only
part that touches the database.
"""
