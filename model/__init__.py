"""CDCML matching model: features, networks, losses, data, training and evaluation."""
