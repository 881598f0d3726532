"""Data pipelines: DALI on GPU, DALI on CPU, and a PyAV/OpenCV fallback, behind one contract."""
