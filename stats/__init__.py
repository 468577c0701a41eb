"""pprl's statistics side: entity table, differentially private queries, budget ledger, reports."""
