"""The report: the HTML evidence report and its figures, rendered from stored runs only."""
