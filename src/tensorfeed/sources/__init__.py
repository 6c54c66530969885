"""One module per kind of source; each holds that source's Dataset/Stream classes."""
