"""Reliability suite: exact resume, bad inputs, mixed precision, distributed training and soak."""
