"""Developer tools that drive the product: `python -m tools.pictures` makes the README's pictures."""
