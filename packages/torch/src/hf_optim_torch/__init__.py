"""hf-optim-torch."""
