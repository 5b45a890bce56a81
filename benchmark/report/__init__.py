"""The report: the HTML evidence report, its figures and the terminal tables, rendered from stored runs only."""
