"""gesturebench: a benchmark suite for spatiotemporal gesture recognition.

Reproduces and extends Zhang, Zhu et al., "Attention in Convolutional LSTM for Gesture
Recognition", NeurIPS 2018.
"""

__version__ = "0.1.0"
