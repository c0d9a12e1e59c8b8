"""transferlens."""
