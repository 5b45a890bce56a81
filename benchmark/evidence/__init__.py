"""The evidence: hypothesis and candidate rules, the summary table, the power study."""
