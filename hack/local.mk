##@ Local cluster (filled in by the run-local work)
