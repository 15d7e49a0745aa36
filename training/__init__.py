"""Training-side tools: dataset readers, skeleton extraction, and model training CLIs."""
