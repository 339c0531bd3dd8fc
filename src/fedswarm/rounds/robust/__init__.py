"""Robustness machinery of a round: robust rule objects, the FLTrust server update, per-update anomaly
detection with reputations, and group-wise robust aggregation. See docs/robustness.md."""
