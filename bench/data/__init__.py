"""Dataset formats, the paper's frame sampling, and the synthetic gesture generator."""
