"""The Dagster layer: resources, assets, checks, jobs, schedules and sensors that wire the plain modules."""
