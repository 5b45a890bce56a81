"""The experiment: the matrix, the runner and its executors, the results store."""
