"""Fine-tuning baseline (ft, ft-l, ft-m)."""
