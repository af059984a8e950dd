"""Campaign orchestration, tracking, scheduling and the `matscreen` command line."""
