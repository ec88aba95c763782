"""Training: the two-phase fine-tune of the earlier system, made fast, resumable and exact."""
