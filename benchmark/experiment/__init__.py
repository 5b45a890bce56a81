"""The experiment: a study (cohort, matrix, store, executor), its scheduling and workers, the results store."""
