"""Edge: bundles in, speech out."""
