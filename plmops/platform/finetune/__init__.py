"""Fine-tuning and evaluation on downstream benchmarks."""
