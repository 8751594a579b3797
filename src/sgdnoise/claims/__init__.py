"""Ledger rows, one module per chapter; importing a module registers its claims."""
