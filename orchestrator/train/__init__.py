"""Train one stitched supernet on Ray Train."""
