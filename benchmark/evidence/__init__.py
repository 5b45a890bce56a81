"""The evidence: result models, statistics, the rules each hypothesis carries, candidates, the power rates."""
