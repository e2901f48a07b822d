"""The one training loop, the stage runner with its artifact cache, evaluation and checkpoints."""
