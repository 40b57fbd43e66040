"""The testing kit's implementation; its public face is `exthandler.testing`."""
