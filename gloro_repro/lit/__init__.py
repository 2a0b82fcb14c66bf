"""Lightning wrappers around the plain-PyTorch core."""
