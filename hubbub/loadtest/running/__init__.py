"""Running a load test: the coordinator process, its worker processes, and the
runner inside each worker that spawns users on schedule and reports every tick."""
