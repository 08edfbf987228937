"""The stages of one job, each a function with typed inputs: embed -> select -> classify (labels, k-fold
classifiers, pseudo-labels, final classifier). :func:`imgselect.run.pipeline.run` reads the config and calls them."""
