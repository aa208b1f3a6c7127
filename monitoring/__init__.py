"""Watch served models: sampled traffic windows, data and prediction drift against the build's reference."""
