"""The data stage: a cohort's table through its adapter, image readers and cache, manifests, splits."""
