"""hf-optim-tf."""
